"""From a model reference to a ready model: models.yaml, the Hub, URLs, model directories, weights.

A REF is a zoo name from models.yaml (or a VIDCLS_ZOO file), `hf://OWNER/REPO[@REVISION]`,
or a local directory, each in vidcls format (config.json + model.safetensors) or in the
`transformers` format of TimeSformer, VideoMAE or ViViT (config.json [+
preprocessor_config.json] + model.safetensors). A zoo entry's weights may also be a
pickle checkpoint at a URL (the X-ViT and VidTr authors' files), converted once into a
model directory in the vidcls cache. Every path ends in a `ModelCard` (what to build and
how to feed it) plus, when weights exist, a safetensors file; foreign key names are
translated on load.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import cache, hub, onnx_runtime, web, zoofile
from .convert import PICKLE_NAME, PREPROCESSOR_NAME, fit_to_arch, read_checkpoint, to_vidcls
from .convert import transformers as hf_format
from .errors import UsageError, VidclsError, printable
from .labels import label_set
from .modeldir import (CONFIG_NAME, LAST, WEIGHTS_NAME, InputSpec, ModelCard, config_context,  # noqa: F401 (re-exported)
                       load_strict, read_json, read_safetensors, save_model_dir)
from .models import build_model, make_config
from .models.validate import ConfigError


@dataclass
class LoadedModel:
    """A ready model with what is needed to feed it and name its outputs."""

    card: ModelCard
    module: nn.Module
    weights: str | None  # where the weights came from; None = random initialisation

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> list[str]:
        """Class names; placeholders when the model has no labelled head."""
        if self.card.labels is not None:
            return self.card.labels
        return [f"class_{i}" for i in range(self.card.arch.get("num_classes", 0))]


# ---------------------------------------------------------------- models.yaml (+ VIDCLS_ZOO files)


def zoo_entries() -> dict[str, dict[str, Any]]:
    """The zoo's entries by name: the packaged models.yaml plus the VIDCLS_ZOO files (vidcls.zoofile)."""
    return zoofile.load().entries


def _entry(name: str) -> dict[str, Any]:
    return zoo_entries()[name]


def zoo_origin(name: str) -> str:
    """Where a zoo entry is defined: "vidcls" (the packaged models.yaml) or the path of a VIDCLS_ZOO file."""
    return zoofile.load().origins.get(name, zoofile.SHIPPED)


def hub_weights(name: str) -> dict[str, Any] | None:
    """A zoo entry's Hub pin {repo, revision, filename, sha256}, or None if it has no Hub weights."""
    weights = _entry(name).get("weights") or {}
    return weights if "repo" in weights else None


def url_weights(name: str) -> dict[str, Any] | None:
    """A zoo entry's URL source {url, layout, sha256}, or None if its weights are not at a URL."""
    weights = _entry(name).get("weights") or {}
    return weights if "url" in weights else None


def zoo_card(name: str) -> ModelCard:
    """The card of a zoo entry, without touching the network.

    Entries that ship weights are read from their directory; Hub entries are described by
    models.yaml alone (their downloaded config.json is the authority once fetched); URL
    entries by models.yaml alone, always (the file holds tensors only), their labels by
    `labels:` or else the shipped label set named by `dataset:`.
    """
    entry = _entry(name)
    directory = entry_directory(name)
    if directory is not None:
        return read_card(directory)
    labels = entry.get("labels")
    if labels is None and url_weights(name) is not None:
        labels = label_set(entry["dataset"])
    return ModelCard(name=name, family=entry["family"], arch=dict(entry.get("arch", {})),
                     input=InputSpec.from_dict(entry.get("input", {})), labels=labels)


def entry_directory(name: str) -> Path | None:
    """The local directory holding a zoo entry's config and weights, or None if it has none."""
    weights = _entry(name).get("weights") or {}
    if "package" in weights:
        return Path(str(resources.files("vidcls").joinpath("assets", weights["package"])))
    return None


def weights_source(name: str) -> str | None:
    """Human-readable origin of a zoo entry's weights, or None for an architecture only."""
    weights = _entry(name).get("weights") or {}
    if "package" in weights:
        return f"package:{weights['package']}"
    if "repo" in weights:
        return f"hf://{weights['repo']}@{weights.get('revision', 'main')}"
    return weights.get("url")


def zoo_summary(name: str) -> dict[str, Any]:
    """One row of `vidcls models`: what a user needs to pick a model."""
    entry = _entry(name)
    card = zoo_card(name)
    published = entry.get("published") or {}
    return {"name": name, "family": card.family, "attention": entry["attention"],
            "frames": card.input.frames, "stride": card.input.stride, "size": card.input.size,
            "views": card.input.clips * card.input.crops, "weights": weights_source(name),
            "labels": entry.get("dataset"), "top1": published.get("top1"), "top1_views": published.get("views"),
            "gmacs": published.get("gmacs"), "verified": entry.get("verified"), "zoo": zoo_origin(name),
            "description": entry.get("description", "")}


# ---------------------------------------------------------------- model directories


def read_card(directory: Path, recipe: dict[str, Any] | None = None) -> ModelCard:
    """The ModelCard of a model directory in vidcls or transformers format.

    recipe: models.yaml input options (frames, stride, views) for a transformers repository,
    whose config does not record how its clips were sampled.
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise VidclsError(f"{directory}: no {CONFIG_NAME} (not a vidcls or transformers model directory)"
                          f"{_run_hint(directory)}")
    config = read_json(path)
    with config_context(directory):
        if not hf_format.is_transformers_config(config):
            return ModelCard.from_config(config, default_name=directory.name)
        pre_path = directory / PREPROCESSOR_NAME
        preprocessor = read_json(pre_path) if pre_path.is_file() else None
        return hf_format.card_from_config(config, preprocessor, directory.name, recipe)


def _run_hint(directory: Path) -> str:
    """For a training run stopped before its first best model: where its checkpoint is."""
    last = directory / LAST
    if not (last / CONFIG_NAME).is_file():
        return ""
    return (f"; it is a training run without a best model yet (stopped during its first epoch?): its latest "
            f"checkpoint is {last} (--model {last}), or continue it with `vidcls train ... --output {directory} --resume`")


def weights_in(directory: Path, ref: str) -> Path:
    """The safetensors file of a model directory; a pickle-only one is refused with the fix."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file() and (Path(directory) / PICKLE_NAME).is_file():
        raise VidclsError(_pickle_only(ref))
    return path


def _pickle_only(ref: str) -> str:
    return (f"{ref} has no {WEIGHTS_NAME}; a pickle checkpoint ({PICKLE_NAME}) is never unpickled "
            f"implicitly: convert it once with `vidcls convert {ref} --family FAMILY --output DIR` "
            f"and use --model DIR")


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors file strictly (foreign key names translated); one-line errors."""
    state, unused, _ = to_vidcls(read_safetensors(path))
    load_strict(module, state, str(path), unused)


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


def is_url(ref: str) -> bool:
    """Whether a REF is a zoo entry whose weights are a file at a URL."""
    return ref in zoo_entries() and url_weights(ref) is not None


def fetch(ref: str) -> Fetched:
    """The weights of a zoo entry with downloadable weights or of an hf:// REF, verified (and converted)."""
    return fetch_url(ref) if is_url(ref) else fetch_hub(ref)


def keep_converted(source: cache.VerifiedFile, card: ModelCard, layout: str | None) -> cache.VerifiedFile:
    """A verified pickle checkpoint converted once into a vidcls model directory, kept by its sha256.

    Read with torch.load(weights_only=True) only and translated by the converter of its
    layout (vidcls.convert; None: any layout), it must fit `card`'s architecture exactly.
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
            save_model_dir(target, card, module)
    return dataclasses.replace(source, path=target / WEIGHTS_NAME)


# ---------------------------------------------------------------- the Hub


def _hub_pin(ref: str) -> tuple[hub.HubRef, str, str | None, str]:
    """REF (zoo name or hf://) -> (Hub ref, weights file, pinned sha256, the command that fetches it)."""
    how = f"vidcls download {ref}"
    pin = hub_weights(ref) if ref in zoo_entries() else None
    if pin is None:
        return hub.parse_hf_ref(ref), WEIGHTS_NAME, None, how
    return hub.HubRef(pin["repo"], pin.get("revision")), pin.get("filename", WEIGHTS_NAME), pin.get("sha256"), how


def _hub_card(ref: str) -> ModelCard:
    """The card of a Hub model from its config.json (and preprocessor_config.json), no weights.

    The card is named by the REF (the cache directory is a commit hash); a zoo entry adds
    the frame count / stride / views of models.yaml, which a transformers config does not record.
    """
    hub_ref, _, _, how = _hub_pin(ref)
    config = hub.download(hub_ref, CONFIG_NAME, how_to_fetch=how)
    hub.download_optional(hub_ref, PREPROCESSOR_NAME, how_to_fetch=how)
    card = read_card(config.parent, recipe=_entry(ref).get("input") if ref in zoo_entries() else None)
    card.name = ref
    return card


def _fetch_weights(ref: str) -> cache.VerifiedFile:
    hub_ref, filename, sha256, how = _hub_pin(ref)
    return hub.fetch_verified(hub_ref, filename, sha256=sha256, how_to_fetch=how)


def _fallback_pin(ref: str) -> dict[str, Any] | None:
    """A zoo entry's `fallback` {revision, filename, sha256}: a pickle checkpoint to convert
    when the pinned safetensors file (often on a PR ref) is absent."""
    pin = hub_weights(ref) if ref in zoo_entries() else None
    return (pin or {}).get("fallback")


def _fetch_converted(ref: str, fallback: dict[str, Any]) -> Fetched:
    """The fallback pickle checkpoint, verified and converted once (keep_converted)."""
    pin = hub_weights(ref)
    hub_ref, how = hub.HubRef(pin["repo"], fallback.get("revision")), f"vidcls download {ref}"
    config = hub.download(hub_ref, CONFIG_NAME, how_to_fetch=how)
    hub.download_optional(hub_ref, PREPROCESSOR_NAME, how_to_fetch=how)
    pickle = hub.fetch_verified(hub_ref, fallback.get("filename", PICKLE_NAME), sha256=fallback.get("sha256"),
                                how_to_fetch=how)
    card = read_card(config.parent, recipe=_entry(ref).get("input"))
    card.name = ref
    return Fetched(card, keep_converted(pickle, card, layout=None))


def fetch_hub(ref: str) -> Fetched:
    """Download (or find in the Hub cache) a Hub model's files; the weights are verified first.

    A zoo entry with a `fallback` uses it when its pinned safetensors file is absent from the
    Hub (or, offline, from the cache while the fallback is cached).
    """
    try:
        return Fetched(_hub_card(ref), _fetch_weights(ref))
    except (hub.FileNotOnHub, hub.NotCached) as primary:
        fallback = _fallback_pin(ref)
        if fallback is None:
            if isinstance(primary, hub.NotCached):
                raise
            raise VidclsError(_pickle_only(str(_hub_pin(ref)[0]))) from None
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
    verified (vidcls.web), converted (keep_converted), and deleted: the conversion is what is kept.
    """
    pin, zoo = url_weights(ref), zoofile.load()
    url, card = pin["url"], zoo_card(ref)
    pinned = cache.Digest(pin["sha256"], f"the sha256 pinned in {zoo.pinned_in(ref)}") if pin.get("sha256") else None
    with cache.exclusive(url):
        known = pinned.sha256.lower() if pinned else cache.read_lock().get(url)
        if known and (cache.converted_dir(known) / WEIGHTS_NAME).is_file():
            return Fetched(card, cache.VerifiedFile(cache.converted_dir(known) / WEIGHTS_NAME, url, known, False))
        source = web.fetch(url, pinned=pinned, how_to_fetch=f"vidcls download {ref}")
        converted = keep_converted(source, card, layout=pin["layout"])
        source.path.unlink()
    return Fetched(card, converted)


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
    if not (is_hub(ref) or is_url(ref)):
        what = f"zoo model {ref!r} has no weights on the Hub or at a URL" if ref in zoo_entries() else \
            f"{ref!r} is neither a zoo name nor hf://OWNER/REPO"
        raise UsageError(f"{what}; nothing to download")
    if ref in zoo_entries():
        return fetch(ref).weights
    hub_ref, _, _, how = _hub_pin(ref)
    for name in (CONFIG_NAME, PREPROCESSOR_NAME):
        hub.download_optional(hub_ref, name, how_to_fetch=how)
    try:
        return _fetch_weights(ref)
    except hub.FileNotOnHub:
        raise VidclsError(_pickle_only(str(hub_ref))) from None


# ---------------------------------------------------------------- REF resolution


@dataclass(frozen=True)
class Resolved:
    """What a REF names: its card, and its weights file when they were asked for and exist.

    weights is None for an architecture without trained weights, and whenever the caller
    said it does not need them (then nothing but the config was read or downloaded).
    """

    card: ModelCard
    weights: Path | None


def resolve(ref: str, *, need_weights: bool = True) -> Resolved:
    """The one resolver of flow 2: a REF (zoo name, hf://OWNER/REPO[@REV], model directory, exported .onnx
    file) -> card + weights (for an .onnx file: the file itself, its card read from its metadata).

    need_weights=False is for consumers that only build the architecture (benchmark, a
    training run with --init): a zoo entry is then described by models.yaml alone, with no
    network access at all, and an hf:// repository by its config files alone. With
    need_weights=True Hub weights are downloaded (or found in the cache) and verified, and a
    URL entry's file downloaded, verified and converted once (fetch_url).
    """
    if ref in zoo_entries():
        if need_weights and (is_hub(ref) or is_url(ref)):
            files = fetch(ref)
            return Resolved(files.card, files.weights.path)
        directory = entry_directory(ref)
        return Resolved(zoo_card(ref), directory / WEIGHTS_NAME if directory and need_weights else None)
    if ref.startswith("hf://"):
        if need_weights:
            files = fetch_hub(ref)
            return Resolved(files.card, files.weights.path)
        return Resolved(_hub_card(ref), None)
    onnx = onnx_runtime.onnx_file(ref)
    if onnx is not None:
        return Resolved(onnx_runtime.read_onnx_card(onnx)[0], onnx)
    path = Path(ref).expanduser()
    if path.is_dir():
        return Resolved(read_card(path), weights_in(path, ref) if need_weights else None)
    raise UsageError(unknown_model_message(ref))


def _looks_like_path(ref: str) -> bool:
    """Whether a REF was meant as a path (a zoo name never holds a separator or starts with . or ~)."""
    return "/" in ref or "\\" in ref or ref.startswith((".", "~"))


def unknown_model_message(ref: str) -> str:
    """Why a REF names nothing: a missing path, a file where a directory belongs, or the closest zoo names."""
    path = Path(ref).expanduser()
    if path.exists():
        return (f"--model {ref}: is a file; a model is a directory (config.json + {WEIGHTS_NAME}), an exported "
                f".onnx file, a zoo name or hf://")
    if _looks_like_path(ref):
        return f"--model {ref}: no such directory"
    close = difflib.get_close_matches(ref, list(zoo_entries()), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown model {ref!r}; {hint}`vidcls models` lists the zoo (a REF may also be hf://OWNER/REPO or a model directory)"


def with_weights() -> list[str]:
    """The zoo entries that come with trained weights (shipped, on the Hub or at a URL)."""
    return [name for name in zoo_entries() if weights_source(name) is not None]


def check_labels(card: ModelCard) -> None:
    """The head size must match the label list, or predictions would be mislabelled."""
    config = make_config(card.family, card.arch)
    if card.labels is not None and len(card.labels) != config.num_classes:
        raise VidclsError(f"model {card.name!r} has {len(card.labels)} labels but a head of "
                          f"{config.num_classes} classes")


def load_model(ref: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
               allow_random: bool = False) -> LoadedModel:
    """Build the model a REF names and load its weights (or `weights`, a safetensors file).

    An architecture without trained weights is refused unless allow_random=True (a random
    head prints confident-looking nonsense; benchmarks and training start from it on purpose).
    An exported .onnx file (or a directory holding only model.onnx) runs on ONNX Runtime:
    its module is an OnnxModule, called like the torch model, its card read from the file.
    """
    resolved = resolve(ref, need_weights=weights is None)  # --weights: the REF's own are not downloaded
    if resolved.weights is not None and resolved.weights.suffix == ".onnx":
        if weights is not None:
            raise UsageError(f"--weights replaces a torch model's weights; {ref} is an exported ONNX graph "
                             f"that carries its own")
        session = onnx_runtime.open_session(resolved.weights, torch.device(device))
        return LoadedModel(card=resolved.card, module=onnx_runtime.OnnxModule(session, torch.device(device)),
                           weights=str(resolved.weights))
    weights_path = Path(weights) if weights is not None else resolved.weights
    if weights_path is None and not allow_random:
        raise UsageError(no_weights_message(ref))
    check_labels(resolved.card)
    card = resolved.card
    try:
        module = build_model(card.family, card.arch, frames=card.input.frames, size=card.input.size)
    except ConfigError as exc:
        raise ConfigError(f"model {printable(ref)}: {exc}") from None
    if weights_path is not None:
        load_weights(module, weights_path)
    module.eval().to(device)
    return LoadedModel(card=resolved.card, module=module, weights=str(weights_path) if weights_path else None)


def no_weights_message(ref: str) -> str:
    """Why an architecture cannot classify, and the ways out."""
    return (f"model {ref!r} is an architecture without trained weights; pass --weights FILE (a safetensors "
            f"file), fine-tune it with `vidcls train`, convert a checkpoint with `vidcls convert`, or pick a "
            f"zoo model with weights: {', '.join(with_weights())}")
