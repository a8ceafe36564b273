"""Downloaded weights: a zoo entry's or an hf:// REF's files from the Hub or a URL, verified and converted once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vidcls.errors import UsageError, VidclsError
from vidcls.models import build_model
from vidcls.zoo import cache, hub, web
from vidcls.zoo import entries as zoofile
from vidcls.zoo.bounded import MAX_BYTES, SIDE_FILE_BYTES
from vidcls.zoo.cards import pickle_only_message, read_card
from vidcls.zoo.catalog import catalog_entry, hub_weights, url_weights, zoo_card, zoo_entries, zoo_origin
from vidcls.zoo.convert import (
    PICKLE_NAME,
    PREPROCESSOR_NAME,
    TOKENIZER_FILES,
    fit_to_arch,
    read_checkpoint,
    to_vidcls,
    tokenizer_files,
)
from vidcls.zoo.convert.xclip import is_xclip_config
from vidcls.zoo.labels import label_set
from vidcls.zoo.modeldir import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ModelCard,
    load_strict,
    read_json,
    save_model_dir,
)

# ---------------------------------------------------------------- downloaded weights: the Hub, URLs


@dataclass(frozen=True)
class Fetched:
    """A model whose weights were downloaded (or found in a cache) and verified.

    weights.path is the safetensors file to load: the Hub cache's own file, or the
    conversion of a verified pickle checkpoint in the vidcls cache; weights.key and
    .sha256 name the downloaded file that was verified.
    """

    card: ModelCard
    weights: cache.VerifiedFile


def is_hub(ref: str) -> bool:
    """Whether a REF's weights come from the Hub (hf://, or a zoo entry pinned to a repository)."""
    return ref.startswith("hf://") or (ref in zoo_entries() and hub_weights(ref) is not None)


def is_url_entry(ref: str) -> bool:
    """Whether a REF is a zoo entry whose weights are a file at a URL."""
    return ref in zoo_entries() and url_weights(ref) is not None


def fetch(ref: str) -> Fetched:
    """The weights of a zoo entry with downloadable weights or of an hf:// REF, verified (and converted)."""
    return fetch_url(ref) if is_url_entry(ref) else fetch_hub(ref)


def keep_converted(source: cache.VerifiedFile, card: ModelCard, layout: str | None) -> cache.VerifiedFile:
    """A verified pickle checkpoint converted once into a vidcls model directory, kept by its sha256.

    Read with torch.load(weights_only=True) only and translated by the converter of its
    layout (vidcls.zoo.convert; None: any layout), it must fit `card`'s architecture exactly.
    The directory, cache.converted_dir(sha256), is an ordinary model directory (--model DIR).
    """
    target = cache.converted_dir(source.sha256)
    with cache.exclusive(str(target)):
        if not (target / WEIGHTS_NAME).is_file():
            state, unused, found = to_vidcls(read_checkpoint(source.path))
            if layout is not None and found != layout:
                raise VidclsError(f"{source.key}: the checkpoint's keys are in the {found} layout, not the {layout} "
                                  f"layout its zoo entry names")
            module = build_model(card.family, card.arch)
            load_strict(module, fit_to_arch(found, state, card.arch), f"{source.key} (as zoo model {card.name!r})",
                        unused)
            save_model_dir(target, card, module, extra=tokenizer_files(source.path.parent))
    return dataclasses.replace(source, path=target / WEIGHTS_NAME)


# ---------------------------------------------------------------- the Hub


def _hub_pin(ref: str) -> tuple[hub.HubRef, str, str | None, str]:
    """REF (zoo name or hf://) -> (Hub ref, weights file, pinned sha256, the command that fetches it)."""
    how = f"vidcls download {ref}"
    pin = hub_weights(ref) if ref in zoo_entries() else None
    if pin is None:
        return hub.parse_hf_ref(ref), WEIGHTS_NAME, None, how
    return hub.HubRef(pin["repo"], pin.get("revision")), pin.get("filename", WEIGHTS_NAME), pin.get("sha256"), how


def _repo_card(hub_ref: hub.HubRef, ref: str, how: str) -> ModelCard:
    """A Hub repository's card from its config files (a text side's tokenizer files come along), named by
    the REF; a zoo entry adds models.yaml's recipe and, for X-CLIP, its default label set (dataset)."""
    config = hub.download(hub_ref, CONFIG_NAME, how_to_fetch=how, limit=SIDE_FILE_BYTES)
    hub.download_optional(hub_ref, PREPROCESSOR_NAME, how_to_fetch=how)
    entry = catalog_entry(ref) if ref in zoo_entries() else {}
    labels = None
    if is_xclip_config(read_json(config)):
        for name in TOKENIZER_FILES:
            hub.download_optional(hub_ref, name, how_to_fetch=how)
        labels = entry.get("labels") or (label_set(entry["dataset"]) if entry.get("dataset") else None)
    card = read_card(config.parent, recipe=entry.get("input"), labels=labels)
    card.name = ref
    return card


def hub_card(ref: str) -> ModelCard:
    """The card of a Hub model from its config.json (and preprocessor_config.json), no weights.

    The card is named by the REF (the cache directory is a commit hash); a zoo entry adds
    the frame count / stride / views of models.yaml, which a transformers config does not record.
    """
    hub_ref, _, _, how = _hub_pin(ref)
    return _repo_card(hub_ref, ref, how)


def _fetch_weights(ref: str, card: ModelCard | None) -> cache.VerifiedFile:
    """The REF's weight file from the Hub, verified, bounded by its pinned size, else by `card`'s
    architecture (checkpoint_bound), else (a repository with no card, such as timm's) by MAX_BYTES."""
    hub_ref, filename, sha256, how = _hub_pin(ref)
    pin = hub_weights(ref) if ref in zoo_entries() else None
    return hub.fetch_verified(hub_ref, filename, sha256=sha256, how_to_fetch=how,
                              limit=_weights_bound(pin or {}, card))


def _weights_bound(pin: dict[str, Any], card: ModelCard | None) -> int:
    """The most bytes a weight file may take: its pin's `size`, else checkpoint_bound(card), else MAX_BYTES."""
    if pin.get("size") is not None:
        return pin["size"]
    return min(checkpoint_bound(card), MAX_BYTES) if card is not None else MAX_BYTES


def _fallback_pin(ref: str) -> dict[str, Any] | None:
    """A zoo entry's `fallback` {revision, filename, sha256}: a pickle checkpoint to convert
    when the pinned safetensors file (often on a PR ref) is absent."""
    pin = hub_weights(ref) if ref in zoo_entries() else None
    return (pin or {}).get("fallback")


def _fetch_converted(ref: str, fallback: dict[str, Any]) -> Fetched:
    """The fallback pickle checkpoint, verified and converted once (keep_converted)."""
    pin = hub_weights(ref)
    hub_ref, how = hub.HubRef(pin["repo"], fallback.get("revision")), f"vidcls download {ref}"
    card = _repo_card(hub_ref, ref, how)
    pickle = hub.fetch_verified(hub_ref, fallback.get("filename", PICKLE_NAME), sha256=fallback.get("sha256"),
                                how_to_fetch=how, limit=_weights_bound(fallback, card))
    return Fetched(card, keep_converted(pickle, card, layout=None))


def fetch_hub(ref: str) -> Fetched:
    """Download (or find in the Hub cache) a Hub model's files; the weights are verified first.

    A zoo entry with a `fallback` uses it when its pinned safetensors file is absent from the
    Hub (or, offline, from the cache while the fallback is cached).
    """
    try:
        card = hub_card(ref)
        return Fetched(card, _fetch_weights(ref, card))
    except (hub.FileNotOnHub, hub.NotCached) as primary:
        fallback = _fallback_pin(ref)
        if fallback is None:
            if isinstance(primary, hub.NotCached):
                raise
            raise VidclsError(pickle_only_message(str(_hub_pin(ref)[0]))) from None
        try:
            return _fetch_converted(ref, fallback)
        except hub.NotCached:
            raise primary from None


# ---------------------------------------------------------------- URLs


def fetch_url(ref: str) -> Fetched:
    """A URL entry's weights: its converted model directory in the vidcls cache, made on first use.

    The file's digest (pinned in the entry, else recorded in the lock file by the first
    download) names the conversion, so once converted neither the file nor the network is
    needed again. Otherwise the file is downloaded (resuming a partial download) and
    verified (vidcls.zoo.web), converted (keep_converted), and deleted: the conversion is what is kept.
    """
    pin, zoo = url_weights(ref), zoofile.load()
    url, card = pin["url"], zoo_card(ref)
    pinned = cache.Digest(pin["sha256"], f"the sha256 pinned in {zoo.pinned_in(ref)}") if pin.get("sha256") else None
    with cache.exclusive(url):
        known = pinned.sha256.lower() if pinned else cache.read_lock().get(url)
        if known and (cache.converted_dir(known) / WEIGHTS_NAME).is_file():
            return Fetched(card, cache.VerifiedFile(cache.converted_dir(known) / WEIGHTS_NAME, url, known, False))
        source = web.fetch(url, pinned=pinned, how_to_fetch=f"vidcls download {ref}", size=pin.get("size"),
                           limit=checkpoint_bound(card))
        converted = keep_converted(source, card, layout=pin["layout"])
        source.path.unlink()
    return Fetched(card, converted)


def checkpoint_bound(card: ModelCard) -> int:
    """The most bytes a checkpoint of `card`'s architecture may take: its parameters in fp32, four
    times over (a training checkpoint may keep Adam's two moments and an EMA copy beside them),
    plus 64 MiB of anything else. Counted on the meta device: nothing is allocated."""
    import torch

    with torch.device("meta"):
        module = build_model(card.family, card.arch)
    return 4 * 4 * sum(p.numel() for p in module.parameters()) + (64 << 20)


def pin_hint(ref: str, sha256: str) -> str | None:
    """How to pin the digest of a URL entry's file in its zoo file, or None if it is pinned already
    (or the REF is no URL entry).

    A first download only records the digest in this machine's lock file; written into the
    entry, it makes every later download, on any machine, verified against it.
    """
    pin = url_weights(ref) if ref in zoo_entries() else None
    if pin is None or pin.get("sha256"):
        return None
    origin = zoo_origin(ref)
    where = (f"in vidcls's models.yaml (a change to send upstream), or in a copy of the entry in a zoo file "
             f"named by {zoofile.ENV}" if origin == zoofile.SHIPPED else f"in {origin}")
    return f"to pin it for everyone, set `sha256: {sha256}` in the weights of {ref!r} {where}"


def download(ref: str) -> cache.VerifiedFile:
    """`vidcls download`: prefetch a zoo entry's weights (Hub or URL), or an hf:// repository's files.

    From the Hub the config and preprocessing files come along when the repository has
    them, so any repository with a model.safetensors can be prefetched, including the timm
    ImageNet weights that `--init imagenet` reads. A URL entry's file ends as a converted
    model directory in the vidcls cache.
    """
    if not (is_hub(ref) or is_url_entry(ref)):
        what = f"zoo model {ref!r} has no weights on the Hub or at a URL" if ref in zoo_entries() else \
            f"{ref!r} is neither a zoo name nor hf://OWNER/REPO"
        raise UsageError(f"{what}; nothing to download")
    if ref in zoo_entries():
        return fetch(ref).weights
    hub_ref, _, _, how = _hub_pin(ref)
    for name in (CONFIG_NAME, PREPROCESSOR_NAME):
        hub.download_optional(hub_ref, name, how_to_fetch=how)
    try:
        return _fetch_weights(ref, None)
    except hub.FileNotOnHub:
        raise VidclsError(pickle_only_message(str(hub_ref))) from None
