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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidcls.devices import cast_module
from vidcls.errors import UsageError, VidclsError, printable
from vidcls.models import build_model, make_config
from vidcls.models.clip_tokenizer import ClipTokenizer, has_tokenizer
from vidcls.models.validate import ConfigError
from vidcls.zoo import onnx as onnx_runtime
from vidcls.zoo import openvino as openvino_runtime
from vidcls.zoo.cards import pickle_only_message, read_card
from vidcls.zoo.catalog import entry_directory, with_weights, zoo_card, zoo_entries
from vidcls.zoo.convert import PICKLE_NAME, to_vidcls
from vidcls.zoo.fetch import fetch, fetch_hub, hub_card, is_hub, is_url_entry
from vidcls.zoo.modeldir import (
    WEIGHTS_NAME,
    ModelCard,
    load_strict,
    read_safetensors,
)
from vidcls.zoo.runtime import RuntimeModule


@dataclass
class LoadedModel:
    """A ready model with what is needed to feed it and name its outputs."""

    card: ModelCard
    module: nn.Module
    weights: str | None  # where the weights came from; None = random initialisation
    _cast: dict[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

    @property
    def exported(self) -> bool:
        """Whether the module is an exported graph on another runtime (it runs as exported)."""
        return isinstance(self.module, RuntimeModule)

    def at_precision(self, precision: str) -> nn.Module:
        """The module to run at `precision` (a concrete one: fp32, bf16, fp16): for bf16/fp16 a copy
        with its weights cast once (devices.cast_module), kept for the next run with this model."""
        if precision == "fp32" or self.exported:
            return self.module
        if precision not in self._cast:
            self._cast[precision] = cast_module(self.module, precision)
        return self._cast[precision]

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def has_text(self) -> bool:
        """Whether the classes are read from label names (X-CLIP): `use_labels` then sets any label set."""
        return not self.exported and hasattr(self.module, "set_labels")

    def use_labels(self, names: Sequence[str], prompt: str | None = None) -> LoadedModel:
        """Classify over `names` from now on (each encoded as `prompt`, "a video of {}"; default the
        checkpoint's convention): the module's classifier, its cast copies and the card's labels.

        A model without a text side is a UsageError: its classes are fixed by its trained head.
        """
        if not self.has_text:
            why = "an exported graph keeps the label set it was exported with" if self.exported else \
                "its classes are its trained head's"
            raise UsageError(f"--labels needs a model that reads label names (X-CLIP: `vidcls models`); "
                             f"{self.name} has no text side ({why})")
        for module in (self.module, *self._cast.values()):
            module.set_labels(list(names), prompt)
        self.card = dataclasses.replace(self.card, arch={**self.card.arch, "num_classes": len(names)},
                                        labels=list(names))
        return self

    def check_labelled(self) -> None:
        """A text model without a label set (an hf:// X-CLIP outside the zoo) cannot classify: say so
        before any video is decoded."""
        if self.has_text and self.card.labels is None:
            raise UsageError(f"{self.name} reads its classes from label names and has no default label set; "
                             f"give --labels \"a,b,c\" (or @FILE)")

    @property
    def labels(self) -> list[str]:
        """Class names; placeholders when the model has no labelled head."""
        if self.card.labels is not None:
            return self.card.labels
        return [f"class_{i}" for i in range(self.card.arch.get("num_classes", 0))]


def weights_in(directory: Path, ref: str) -> Path:
    """The safetensors file of a model directory; a pickle-only one is refused with the fix."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file() and (Path(directory) / PICKLE_NAME).is_file():
        raise VidclsError(pickle_only_message(ref))
    return path


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors file strictly (foreign key names translated); one-line errors."""
    state, unused, _ = to_vidcls(read_safetensors(path))
    load_strict(module, state, str(path), unused)


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
    file or OpenVINO IR) -> card + weights (for an exported file: the file itself, its card read from it).

    need_weights=False is for consumers that only build the architecture (benchmark, a
    training run with --init): a zoo entry is then described by models.yaml alone, with no
    network access at all, and an hf:// repository by its config files alone. With
    need_weights=True Hub weights are downloaded (or found in the cache) and verified, and a
    URL entry's file downloaded, verified and converted once (fetch_url).
    """
    if ref in zoo_entries():
        if need_weights and (is_hub(ref) or is_url_entry(ref)):
            files = fetch(ref)
            return Resolved(files.card, files.weights.path)
        directory = entry_directory(ref)
        return Resolved(zoo_card(ref), directory / WEIGHTS_NAME if directory and need_weights else None)
    if ref.startswith("hf://"):
        if need_weights:
            files = fetch_hub(ref)
            return Resolved(files.card, files.weights.path)
        return Resolved(hub_card(ref), None)
    onnx = onnx_runtime.onnx_file(ref)
    if onnx is not None:
        return Resolved(onnx_runtime.read_onnx_card(onnx)[0], onnx)
    ir = openvino_runtime.ir_file(ref)
    if ir is not None:
        return Resolved(openvino_runtime.read_ir_card(ir)[0], ir)
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
                f".onnx file or OpenVINO .xml, a zoo name or hf://")
    if _looks_like_path(ref):
        return f"--model {ref}: no such directory"
    close = difflib.get_close_matches(ref, list(zoo_entries()), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (f"unknown model {ref!r}; {hint}`vidcls models` lists the zoo "
            f"(a REF may also be hf://OWNER/REPO or a model directory)")


def check_labels(card: ModelCard) -> None:
    """The head size must match the label list, or predictions would be mislabelled."""
    config = make_config(card.family, card.arch)
    if card.labels is not None and len(card.labels) != config.num_classes:
        raise VidclsError(f"model {card.name!r} has {len(card.labels)} labels but a head of "
                          f"{config.num_classes} classes")


EXPORTED_SUFFIXES = (".onnx", ".xml")  # a resolved "weights" file that is a whole exported graph


def exported_module(path: Path, device: torch.device, card: ModelCard | None = None) -> nn.Module:
    """The runtime module of an exported graph: ONNX Runtime for .onnx, OpenVINO for .xml; with
    `card`, its labels are checked against the graph's outputs as a torch model's against its head."""
    if path.suffix == ".xml":
        return openvino_runtime.OpenVinoModule(path, device)
    session = onnx_runtime.open_session(path, device)
    if card is not None:
        check_labels(card)
        onnx_runtime.check_card_outputs(session, card, path)
    return onnx_runtime.OnnxModule(session, device, classes=len(card.labels) if card and card.labels else None)


def load_model(ref: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
               allow_random: bool = False) -> LoadedModel:
    """Build the model a REF names and load its weights (or `weights`, a safetensors file).

    An architecture without trained weights is refused unless allow_random=True (a random
    head prints confident-looking nonsense; benchmarks and training start from it on purpose).
    An exported .onnx file (or a directory holding only model.onnx) runs on ONNX Runtime, an
    OpenVINO IR (.xml, or a directory holding only model.xml) on OpenVINO: its module is called
    like the torch model (vidcls.zoo.runtime.RuntimeModule), its card read from the file.
    """
    resolved = resolve(ref, need_weights=weights is None)  # --weights: the REF's own are not downloaded
    if resolved.weights is not None and resolved.weights.suffix in EXPORTED_SUFFIXES:
        if weights is not None:
            raise UsageError(f"--weights replaces a torch model's weights; {ref} is an exported graph that carries "
                             f"its own")
        module = exported_module(resolved.weights, torch.device(device), resolved.card)
        return LoadedModel(card=resolved.card, module=module, weights=str(resolved.weights))
    weights_path = Path(weights) if weights is not None else resolved.weights
    if weights_path is None and not allow_random:
        raise UsageError(no_weights_message(ref, resolved.card.family))
    check_labels(resolved.card)
    card = resolved.card
    try:
        module = build_model(card.family, card.arch, frames=card.input.frames, size=card.input.size)
    except ConfigError as exc:
        raise ConfigError(f"model {printable(ref)}: {exc}") from None
    if weights_path is not None:
        load_weights(module, weights_path)
    attach_text(module, card, [resolved.weights, weights_path, Path(ref).expanduser() / WEIGHTS_NAME])
    module.eval().to(device)
    return LoadedModel(card=resolved.card, module=module, weights=str(weights_path) if weights_path else None)


def attach_text(module: nn.Module, card: ModelCard, weights_files: Sequence[Path | None]) -> None:
    """A model with a text side (X-CLIP) gets the tokenizer that sits beside its weights (the first of
    `weights_files`' directories holding one) and its card's labels as its label set, encoded on
    first use (a model loaded for its embeddings never runs its text encoder)."""
    if not hasattr(module, "set_labels"):
        return
    for path in weights_files:
        if path is not None and has_tokenizer(Path(path).parent):
            module.tokenizer = ClipTokenizer.from_directory(Path(path).parent, module.config.context_length)
            break
    if card.labels is not None and module.tokenizer is not None:
        module.set_labels(card.labels, encode=False)


DISTILL_TEACHER = "timesformer-k400"  # the teacher the refusal of a linear model suggests


def no_weights_message(ref: str, family: str | None = None) -> str:
    """Why an architecture cannot classify, and the ways out: for the linear family, which has no
    published weights, first the route that makes them (`vidcls distill` from a quadratic model)."""
    if family == "ff-linear":
        return (f"model {ref!r} is an architecture without trained weights (none were ever published for the "
                f"linear family); make them from a pretrained quadratic model: `vidcls distill --teacher "
                f"{DISTILL_TEACHER} --student {ref} --data VIDEOS --output DIR`, then `--model DIR` (any folder of "
                f"videos, no labels needed; the student takes the teacher's labels; README: Getting ff-linear "
                f"weights), or pass --weights FILE")
    return (f"model {ref!r} is an architecture without trained weights; pass --weights FILE (a safetensors "
            f"file), fine-tune it with `vidcls train`, convert a checkpoint with `vidcls convert`, or pick a "
            f"zoo model with weights: {', '.join(with_weights())}")
