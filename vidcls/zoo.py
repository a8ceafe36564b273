"""From a model reference to a ready model: models.yaml, the Hub, model directories, weights.

A REF is a zoo name from models.yaml, `hf://OWNER/REPO[@REVISION]`, or a local directory,
each in vidcls format (config.json + model.safetensors) or in the `transformers` format of
TimeSformer, VideoMAE or ViViT (config.json [+ preprocessor_config.json] +
model.safetensors). Every path ends in a `ModelCard` (what to build and how to feed it)
plus, when weights exist, a safetensors file; foreign key names are translated on load.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from . import hub
from .convert import PICKLE_NAME, PREPROCESSOR_NAME, read_checkpoint, to_vidcls
from .convert import transformers as hf_format
from .errors import UsageError, VidclsError
from .fileio import atomic_file
from .modeldir import (CONFIG_NAME, WEIGHTS_NAME, InputSpec, ModelCard, describe_keys,  # noqa: F401 (re-exported)
                       read_json, read_safetensors, save_model_dir, state_mismatch)
from .models import build_model, make_config


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


# ---------------------------------------------------------------- models.yaml


@cache
def zoo_entries() -> dict[str, dict[str, Any]]:
    """The entries of the packaged models.yaml, by name."""
    text = resources.files("vidcls").joinpath("models.yaml").read_text()
    return yaml.safe_load(text)["models"]


def _entry(name: str) -> dict[str, Any]:
    return zoo_entries()[name]


def hub_weights(name: str) -> dict[str, Any] | None:
    """A zoo entry's Hub pin {repo, revision, filename, sha256}, or None if it has no Hub weights."""
    weights = _entry(name).get("weights") or {}
    return weights if "repo" in weights else None


def zoo_card(name: str) -> ModelCard:
    """The card of a zoo entry, without touching the network.

    Entries that ship weights are read from their directory; Hub entries are described by
    models.yaml alone (their downloaded config.json is the authority once fetched).
    """
    entry = _entry(name)
    directory = entry_directory(name)
    if directory is not None:
        return read_card(directory)
    return ModelCard(name=name, family=entry["family"], arch=dict(entry.get("arch", {})),
                     input=InputSpec.from_dict(entry.get("input", {})), labels=entry.get("labels"))


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
    return None


def zoo_summary(name: str) -> dict[str, Any]:
    """One row of `vidcls models`: what a user needs to pick a model."""
    entry = _entry(name)
    card = zoo_card(name)
    published = entry.get("published") or {}
    return {"name": name, "family": card.family, "attention": entry["attention"],
            "frames": card.input.frames, "stride": card.input.stride, "size": card.input.size,
            "views": card.input.clips * card.input.crops, "weights": weights_source(name),
            "labels": entry.get("dataset"), "top1": published.get("top1"), "gmacs": published.get("gmacs"),
            "verified": entry.get("verified"), "description": entry.get("description", "")}


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
    if not hf_format.is_transformers_config(config):
        return ModelCard.from_config(config, default_name=directory.name)
    pre_path = directory / PREPROCESSOR_NAME
    preprocessor = read_json(pre_path) if pre_path.is_file() else None
    return hf_format.card_from_config(config, preprocessor, directory.name, recipe)


def _run_hint(directory: Path) -> str:
    """For a training run stopped before its first best model: where its checkpoint is."""
    last = directory / "last"
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
            f"implicitly: convert it once with `vidcls convert {ref} --family FAMILY --out DIR` "
            f"and use --model DIR")


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors file strictly (foreign key names translated); one-line errors."""
    state, unused, _ = to_vidcls(read_safetensors(path))
    mismatch = state_mismatch(module.state_dict(), state)
    mismatch["unexpected"] = sorted(mismatch["unexpected"] + unused)
    problems = [describe_keys(what, keys) for what, keys in mismatch.items() if keys]
    if problems:
        raise VidclsError(f"{path}: weights do not fit the model: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- the Hub


@dataclass(frozen=True)
class HubFiles:
    """A Hub model fetched and verified: its card, and its weights in the Hub cache."""

    card: ModelCard
    weights: hub.VerifiedFile


def is_hub(ref: str) -> bool:
    """Whether a REF's weights come from the Hub (hf://, or a zoo entry pinned to a repository)."""
    return ref.startswith("hf://") or (ref in zoo_entries() and hub_weights(ref) is not None)


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


def _fetch_weights(ref: str) -> hub.VerifiedFile:
    hub_ref, filename, sha256, how = _hub_pin(ref)
    return hub.fetch_verified(hub_ref, filename, sha256=sha256, how_to_fetch=how)


def _fallback_pin(ref: str) -> dict[str, Any] | None:
    """A zoo entry's `fallback` {revision, filename, sha256}: a pickle checkpoint to convert
    when the pinned safetensors file (often on a PR ref) is absent."""
    pin = hub_weights(ref) if ref in zoo_entries() else None
    return (pin or {}).get("fallback")


def converted_path(sha256: str) -> Path:
    """Where the safetensors conversion of a verified pickle checkpoint is kept (by its digest)."""
    return hub.lock_path().parent / "converted" / f"{sha256}.safetensors"


def _fetch_converted(ref: str, fallback: dict[str, Any]) -> HubFiles:
    """The fallback pickle checkpoint, verified, converted once to safetensors and cached.

    It is read with torch.load(weights_only=True) only; the conversion is keyed by the
    pickle's sha256, so a changed upstream file is never mistaken for the old conversion.
    """
    from safetensors.torch import save_file


    pin = hub_weights(ref)
    hub_ref, how = hub.HubRef(pin["repo"], fallback.get("revision")), f"vidcls download {ref}"
    config = hub.download(hub_ref, CONFIG_NAME, how_to_fetch=how)
    hub.download_optional(hub_ref, PREPROCESSOR_NAME, how_to_fetch=how)
    pickle = hub.fetch_verified(hub_ref, fallback.get("filename", PICKLE_NAME), sha256=fallback.get("sha256"),
                                how_to_fetch=how)
    target = converted_path(pickle.sha256)
    if not target.is_file():
        state, _, _ = to_vidcls(read_checkpoint(pickle.path))
        with atomic_file(target) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    card = read_card(config.parent, recipe=_entry(ref).get("input"))
    card.name = ref
    return HubFiles(card, hub.VerifiedFile(target, pickle.commit, pickle.sha256, pickle.recorded))


def fetch_hub(ref: str) -> HubFiles:
    """Download (or find in the Hub cache) a Hub model's files; the weights are verified first.

    A zoo entry with a `fallback` uses it when its pinned safetensors file is absent from the
    Hub (or, offline, from the cache while the fallback is cached).
    """
    try:
        return HubFiles(_hub_card(ref), _fetch_weights(ref))
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


def download(ref: str) -> hub.VerifiedFile:
    """`vidcls download`: prefetch a zoo entry's or hf:// repository's files into the Hub cache.

    The config and preprocessing files come along when the repository has them, so any
    repository with a model.safetensors can be prefetched, including the timm ImageNet
    weights that `--init imagenet` reads.
    """
    if not is_hub(ref):
        what = f"zoo model {ref!r} has no weights on the Hub" if ref in zoo_entries() else \
            f"{ref!r} is neither a zoo name nor hf://OWNER/REPO"
        raise UsageError(f"{what}; nothing to download")
    if ref in zoo_entries():
        return fetch_hub(ref).weights
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
    """The one resolver of flow 2: a REF (zoo name, hf://OWNER/REPO[@REV], model directory) -> card + weights.

    need_weights=False is for consumers that only build the architecture (benchmark, a
    training run with --init): a zoo entry is then described by models.yaml alone, with no
    network access at all, and an hf:// repository by its config files alone. With
    need_weights=True Hub weights are downloaded (or found in the cache) and verified.
    """
    if ref in zoo_entries():
        if need_weights and is_hub(ref):
            files = fetch_hub(ref)
            return Resolved(files.card, files.weights.path)
        directory = entry_directory(ref)
        return Resolved(zoo_card(ref), directory / WEIGHTS_NAME if directory and need_weights else None)
    if ref.startswith("hf://"):
        if need_weights:
            files = fetch_hub(ref)
            return Resolved(files.card, files.weights.path)
        return Resolved(_hub_card(ref), None)
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
        return f"--model {ref}: is a file; a model is a directory (config.json + {WEIGHTS_NAME}), a zoo name or hf://"
    if _looks_like_path(ref):
        return f"--model {ref}: no such directory"
    close = difflib.get_close_matches(ref, list(zoo_entries()), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown model {ref!r}; {hint}`vidcls models` lists the zoo (a REF may also be hf://OWNER/REPO or a model directory)"


def with_weights() -> list[str]:
    """The zoo entries that come with trained weights (shipped or on the Hub)."""
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
    """
    resolved = resolve(ref, need_weights=weights is None)  # --weights: the REF's own are not downloaded
    weights_path = Path(weights) if weights is not None else resolved.weights
    if weights_path is None and not allow_random:
        raise UsageError(no_weights_message(ref))
    check_labels(resolved.card)
    module = build_model(resolved.card.family, resolved.card.arch)
    if weights_path is not None:
        load_weights(module, weights_path)
    module.eval().to(device)
    return LoadedModel(card=resolved.card, module=module, weights=str(weights_path) if weights_path else None)


def no_weights_message(ref: str) -> str:
    """Why an architecture cannot classify, and the ways out."""
    return (f"model {ref!r} is an architecture without trained weights; pass --weights FILE (a safetensors "
            f"file), fine-tune it with `vidcls train`, convert a checkpoint with `vidcls convert`, or pick a "
            f"zoo model with weights: {', '.join(with_weights())}")
