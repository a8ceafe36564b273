"""Foreign checkpoint layouts -> vidcls: key mapping, and `vidcls convert` into a model directory.

One module per source layout, each a pure state-dict translation:
  transformers.py  TimeSformer / VideoMAE / ViViT as saved by the `transformers` package
  xvit.py          the X-ViT authors' released checkpoints
  vidtr.py         the VidTr authors' released (non-compact) checkpoints, into the vidtr
                   family's authors-compatible mode (shared attention, positions on its input)
  vidtr_compact.py the VidTr authors' compact (C-VidTr) checkpoints, into vidtr-compact
  xclip.py         X-CLIP (XCLIPModel) as saved by `transformers`, into the xclip family
  timm.py          timm's image ViT-B/16 (ImageNet initialisation of the video families)

A pickle checkpoint (.bin / .pth / .pt) is only ever read here, by an explicit
`convert_checkpoint` of a file the user names, and then with torch.load(weights_only=True),
which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidcls.errors import UsageError, VidclsError, unreadable_reason
from vidcls.models import build_model, make_config
from vidcls.zoo.convert import transformers as hf_format
from vidcls.zoo.convert import vidtr, vidtr_compact, xclip, xvit
from vidcls.zoo.modeldir import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    InputSpec,
    ModelCard,
    check_weights,
    describe_keys,
    read_json,
    read_safetensors,
    save_model_dir,
    state_mismatch,
)

PICKLE_SUFFIXES = (".bin", ".pth", ".pt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")  # vidcls.models.clip_tokenizer reads them


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files a model directory holds (a text side's), to copy along with its weights."""
    return [Path(directory) / name for name in TOKENIZER_FILES if (Path(directory) / name).is_file()]
PICKLE_NAME = "pytorch_model.bin"
PREPROCESSOR_NAME = "preprocessor_config.json"

# Source layouts other than transformers (whose config.json gives the arch): each module
# says how to recognise it (matches), translate its keys (to_vidcls_state), which family it
# feeds (FAMILY) and, optionally, what its authors' code fixes beyond the shapes (arch_hints) and
# how their forward uses a tensor the architecture holds in another shape (fit_state).
AUTHOR_LAYOUTS = {"xvit": xvit, "vidtr": vidtr, "vidtr-compact": vidtr_compact}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """'transformers', one of AUTHOR_LAYOUTS or 'vidcls' (already ours), from the key names alone."""
    if hf_format.matches(state) or xclip.matches(state):
        return "transformers"
    for name, layout in AUTHOR_LAYOUTS.items():
        if layout.matches(state):
            return name
    return "vidcls"


def fit_to_arch(layout: str, state: dict[str, torch.Tensor], arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A translated state dict as the architecture it loads into uses it, where its layout's code
    says how (a module's `fit_state`: X-ViT's time table shorter than the clip); else as it is."""
    fit = getattr(AUTHOR_LAYOUTS.get(layout), "fit_state", None)
    return state if fit is None else fit(state, arch)


def to_vidcls(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Any supported layout -> (our state dict, source keys with no place in ours, layout name)."""
    layout = detect_layout(state)
    if layout == "transformers":
        return *(xclip if xclip.matches(state) else hf_format).to_vidcls_state(state), layout
    if layout in AUTHOR_LAYOUTS:
        return *AUTHOR_LAYOUTS[layout].to_vidcls_state(state), layout
    return state, [], layout


# ---------------------------------------------------------------- reading checkpoints

_WRAPPERS = ("state_dict", "model_state", "model", "module")


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Training checkpoints nest the weights ({'state_dict': ...}, {'model': ...}) and DDP
    prefixes every key with 'module.'; return the flat tensor dict either way."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise VidclsError("the checkpoint holds no state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise VidclsError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or pickle checkpoint (the latter with weights_only=True)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise UsageError(f"{path}: expected a .safetensors, .bin, .pth or .pt checkpoint")
    if not path.is_file():
        raise VidclsError(f"{path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types; the contract is one line
        raise VidclsError(f"{path}: not a loadable weights-only checkpoint ({unreadable_reason(exc)})") from None
    return _unwrap(obj)


# ---------------------------------------------------------------- transformers configs


def card_from_transformers(config: dict[str, Any], preprocessor: dict[str, Any] | None, name: str,
                           recipe: dict[str, Any] | None = None, labels: list[str] | None = None) -> ModelCard:
    """The card of a transformers-format repository: X-CLIP's (labels: its default label set, which
    its config does not hold) or TimeSformer's, VideoMAE's, ViViT's (labels from id2label)."""
    if xclip.is_xclip_config(config):
        return xclip.card_from_config(config, preprocessor, name, recipe, labels)
    return hf_format.card_from_config(config, preprocessor, name, recipe)


# ---------------------------------------------------------------- architecture


def infer_arch(state: dict[str, torch.Tensor], family: str) -> dict[str, Any]:
    """Hyper-parameters read off the shapes of a state dict in our layout.

    The head count leaves no trace in the shapes: ViT's 64 channels per head is assumed
    (override with `arch`). Options without a trace (X-ViT's shift_div and num_segments, VidTr's
    pooling schedule) keep the family's defaults.
    """
    try:
        width, in_chans, tubelet, _, patch = state["patch_embed.proj.weight"].shape  # Conv3d (C, 3, t, p, p)
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError):
        raise VidclsError("cannot read the architecture off the checkpoint (no patch embedding or blocks)") from None
    arch: dict[str, Any] = {"embed_dim": width, "depth": depth, "num_heads": max(width // 64, 1),
                            "patch_size": patch, "mlp_ratio": mlp_hidden / width, "in_chans": in_chans}
    fields = {f.name for f in dataclasses.fields(make_config(family, {}))}
    if "head.weight" in state:
        arch["num_classes"] = int(state["head.weight"].shape[0])
    if "time_embed" in state:  # (1, T, C) or (1, T, 1, C); VidTr-style tables add a class row
        arch["num_frames"] = int(state["time_embed"].shape[1]) - (1 if family == "vidtr" else 0)
    if "head.fc1.weight" in state:
        arch["head_hidden"] = int(state["head.fc1.weight"].shape[0])
        arch["num_classes"] = int(state["head.fc2.weight"].shape[0])
    elif "head.weight" in state and "head" in fields:
        arch["head"] = "mean"
    if "cls_s" in state and "cls_t" in state and family == "vidtr":  # VidTr's authors' embedding
        arch["num_frames"] = int(state["cls_s"].shape[0])
        arch["img_size"] = int(round((state["cls_t"].shape[1] - 1) ** 0.5)) * int(patch)
        arch["embedding"] = "attention_input"
        if not any(k.startswith("blocks.0.temporal_attn.") for k in state):
            arch["attention"] = "shared"
    elif "pos_embed" in state:
        positions = state["pos_embed"].shape[-2] - (1 if "cls_token" in state else 0)
        arch["img_size"] = int(round(positions ** 0.5)) * int(patch)
    if tubelet != 1:
        arch["tubelet_size"] = tubelet
    return {k: v for k, v in arch.items() if k in fields}


# ---------------------------------------------------------------- vidcls convert


@dataclass
class ConversionReport:
    """What a conversion did: where from, in which layout, and which keys did not line up."""

    source: str
    layout: str
    family: str
    out: Path | None
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


@dataclass
class _Source:
    """A checkpoint to convert plus what its surroundings tell: config.json, preprocessing."""

    state: dict[str, torch.Tensor]
    name: str
    config: dict[str, Any] | None = None
    preprocessor: dict[str, Any] | None = None
    text_files: list[Path] = field(default_factory=list)  # a text side's tokenizer files, copied along


def _weights_in(directory: Path) -> Path:
    for name in (WEIGHTS_NAME, PICKLE_NAME):
        if (directory / name).is_file():
            return directory / name
    raise VidclsError(f"{directory}: no {WEIGHTS_NAME} or {PICKLE_NAME}")


def _local_source(path: Path) -> _Source:
    """A checkpoint file (config.json looked for beside it) or a repository-like directory."""
    directory = path if path.is_dir() else path.parent
    weights = _weights_in(path) if path.is_dir() else path
    config = read_json(directory / CONFIG_NAME) if (directory / CONFIG_NAME).is_file() else None
    pre = read_json(directory / PREPROCESSOR_NAME) if (directory / PREPROCESSOR_NAME).is_file() else None
    return _Source(read_checkpoint(weights), name=(path if path.is_dir() else path.parent).name,
                   config=config, preprocessor=pre, text_files=tokenizer_files(directory))


def _hub_source(ref: str) -> _Source:
    """A Hub repository: its safetensors when it has one, else its pytorch_model.bin."""
    from vidcls.zoo import hub
    from vidcls.zoo.bounded import MAX_BYTES, SIDE_FILE_BYTES

    hub_ref = hub.parse_hf_ref(ref)
    how = f"vidcls convert {ref} ..."
    config = read_json(hub.download(hub_ref, CONFIG_NAME, how_to_fetch=how, limit=SIDE_FILE_BYTES))
    pre_path = hub.download_optional(hub_ref, PREPROCESSOR_NAME, how_to_fetch=how)
    try:
        weights = hub.fetch_verified(hub_ref, WEIGHTS_NAME, how_to_fetch=how, limit=MAX_BYTES)
    except hub.FileNotOnHub:
        weights = hub.fetch_verified(hub_ref, PICKLE_NAME, how_to_fetch=how, limit=MAX_BYTES)
    text = [p for n in TOKENIZER_FILES if (p := hub.download_optional(hub_ref, n, how_to_fetch=how))] \
        if xclip.is_xclip_config(config) else []
    return _Source(read_checkpoint(weights.path), name=hub_ref.repo.split("/")[1], config=config,
                   preprocessor=read_json(pre_path) if pre_path else None, text_files=text)


def _card_for(source: _Source, family: str, state: dict[str, torch.Tensor], layout: str,
              arch_overrides: dict[str, Any], labels: list[str] | None) -> ModelCard:
    if layout == "transformers":
        if source.config is None:
            raise VidclsError(f"a transformers checkpoint needs its {CONFIG_NAME} beside it (it holds the "
                              f"head count and labels)")
        card = card_from_transformers(source.config, source.preprocessor, source.name, labels=labels)
        if card.family != family:
            raise UsageError(f"this is a {source.config.get('model_type')} checkpoint, which converts to "
                             f"--family {card.family}, not {family}")
        card.arch |= arch_overrides
    else:
        arch = infer_arch(state, family)
        hints = getattr(AUTHOR_LAYOUTS.get(layout), "arch_hints", None)
        if hints is not None:
            arch |= hints(state, arch_overrides)
        arch |= arch_overrides
        size = arch.get("img_size", 224)
        card = ModelCard(name=source.name, family=family, arch=arch,
                         input=InputSpec(frames=arch.get("num_frames", 8), size=size))
    if labels is not None:
        card.labels = labels
    return card


def convert_checkpoint(src: str | Path, family: str, out: str | Path | None, allow_missing: bool = False,
                       arch: dict[str, Any] | None = None, labels: list[str] | None = None) -> ConversionReport:
    """Turn a foreign checkpoint into a vidcls model directory at `out` (None: check only).

    src: a .safetensors/.bin/.pth/.pt file, a directory holding one (with config.json for
    the transformers layout), or hf://OWNER/REPO[@REV]. arch: hyper-parameters the
    checkpoint cannot tell (e.g. num_heads), overriding what is inferred. Refuses to write
    a directory with missing weights unless allow_missing (they keep their initialisation);
    keys of the source that have no place in the model are reported, not fatal.
    """
    from vidcls.models import family_class

    family_class(family)  # a usage error before any file is read
    source = _hub_source(str(src)) if str(src).startswith("hf://") else _local_source(Path(src).expanduser())
    state, unused, layout = to_vidcls(source.state)
    if layout in AUTHOR_LAYOUTS and AUTHOR_LAYOUTS[layout].FAMILY != family:
        raise UsageError(f"this is a checkpoint in the {layout} authors' layout, which converts to "
                         f"--family {AUTHOR_LAYOUTS[layout].FAMILY}, not {family}")
    card = _card_for(source, family, state, layout, arch or {}, labels)
    state = fit_to_arch(layout, state, card.arch)
    if card.labels is not None and len(card.labels) != card.arch.get("num_classes", len(card.labels)):
        raise VidclsError(f"{len(card.labels)} labels for a head of {card.arch['num_classes']} classes")
    try:
        module = build_model(family, card.arch)
    except (TypeError, ValueError) as exc:
        raise VidclsError(f"cannot build {family} from the checkpoint's shapes ({exc}); pass --arch") from None
    mismatch = state_mismatch(module.state_dict(), state)
    report = ConversionReport(source=str(src), layout=layout, family=family, out=None,
                              loaded=len(state) - len(mismatch["unexpected"]), missing=mismatch["missing"],
                              unexpected=sorted(mismatch["unexpected"] + unused))
    if mismatch["wrong shape"]:
        raise VidclsError(f"{src}: {describe_keys('wrong shape', mismatch['wrong shape'])}; pass --arch "
                          f"to match the checkpoint")
    if report.missing and not allow_missing:
        raise VidclsError(f"{src}: the {family} model would lack weights ({describe_keys('missing', report.missing)}); "
                          f"nothing written (pass --allow-missing to keep their initialisation)")
    check_weights(module, state, str(src))
    module.load_state_dict({k: v for k, v in state.items() if k not in mismatch["unexpected"]}, strict=False)
    if out is not None:
        report.out = save_model_dir(Path(out), card, module, extra=source.text_files)
    return report
