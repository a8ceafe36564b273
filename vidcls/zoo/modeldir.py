"""A vidcls model directory: config.json (a ModelCard) + model.safetensors.

The lowest layer of flow 2: it knows how a model is described and stored, nothing about
where it comes from (zoo, Hub) or which foreign layout it was converted from, so the zoo
and the converters can both build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vidcls.errors import VidclsError, check_finite, first_line, printable
from vidcls.fileio import atomic_directory
from vidcls.models import make_config
from vidcls.zoo.spec import InputSpec as InputSpec  # re-exported: where every caller has found it

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LAST = "last"  # a training run directory's latest checkpoint: itself a model directory
FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Everything about a model except its weights: family, hyper-parameters, input, labels."""

    name: str
    family: str
    arch: dict[str, Any]
    input: InputSpec = field(default_factory=InputSpec)
    labels: list[str] | None = None  # None: no trained head (an architecture without weights)

    def __post_init__(self) -> None:
        """A card is checked as it is made, so every way to a model (zoo, Hub, URL, convert,
        train) refuses a bad arch before anything is built (vidcls.models.validate)."""
        make_config(self.family, self.arch)

    def at_shape(self, frames: int | None = None, size: int | None = None) -> ModelCard:
        """The card of a graph traced at this clip shape (None: the card's own): an exported or
        converted model runs at that shape only, and its card must say so."""
        size = size or self.input.size
        resize = self.input.resize  # kept only while it still fits the new size
        if resize is not None and not size <= resize <= InputSpec.max_resize_ratio * size:
            resize = None
        spec = dataclasses.replace(self.input, frames=frames or self.input.frames, size=size, resize=resize)
        return dataclasses.replace(self, input=spec)

    def to_config(self) -> dict[str, Any]:
        """The config.json of a vidcls model directory."""
        config: dict[str, Any] = {"format": "vidcls", "format_version": FORMAT_VERSION, "name": self.name,
                                  "family": self.family, "arch": self.arch, "input": self.input.to_dict()}
        if self.labels is not None:
            config["id2label"] = {str(i): label for i, label in enumerate(self.labels)}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], default_name: str) -> ModelCard:
        try:
            family, arch = config["family"], dict(config["arch"])
        except (KeyError, TypeError, ValueError):
            raise VidclsError("not in vidcls format (needs 'family' and an 'arch' object)") from None
        labels = labels_from_id2label(config["id2label"]) if "id2label" in config else None
        name = config.get("name", default_name)
        if not isinstance(name, str) or not isinstance(family, str):
            raise VidclsError("name and family must be strings")
        return cls(name=name, family=family, arch=arch,
                   input=InputSpec.from_dict(config.get("input", {})), labels=labels)


def labels_from_id2label(id2label: dict[str, str]) -> list[str]:
    """Class names in index order; the indices must be exactly 0..n-1."""
    if not isinstance(id2label, dict):
        raise VidclsError("id2label must be an object of index -> class name")
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise VidclsError("id2label keys must be integers") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise VidclsError("id2label must number its classes 0..n-1 without gaps")
    return [by_index[i] for i in range(len(by_index))]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; a missing or malformed file is a one-line VidclsError."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise VidclsError(f"{printable(path)} not found") from None
    except OSError as exc:
        raise VidclsError(f"{printable(path)}: cannot read it ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise VidclsError(f"{printable(path)}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise VidclsError(f"{printable(path)}: expected a JSON object")
    return data


@contextlib.contextmanager
def config_context(directory: Path) -> Iterator[None]:
    """Prefix an error in reading a model directory's config with where it is:
    `model directory DIR: config.json: arch.depth = ... is out of range (1..1024)`."""
    try:
        yield
    except VidclsError as exc:
        raise type(exc)(f"model directory {printable(directory)}: {CONFIG_NAME}: {exc}") from None


def write_config(path: Path, card: ModelCard) -> None:
    """A model directory's config.json."""
    Path(path).write_text(json.dumps(card.to_config(), indent=2) + "\n")


def write_weights(path: Path, module: nn.Module) -> None:
    """A model's state dict as safetensors (CPU, contiguous: safetensors stores plain buffers)."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def save_model_dir(directory: Path, card: ModelCard, module: nn.Module, extra: Sequence[Path] = ()) -> Path:
    """Write a vidcls model directory (config.json + model.safetensors, and `extra` files copied in,
    such as a text side's tokenizer) atomically."""
    with atomic_directory(directory) as tmp:
        write_config(tmp / CONFIG_NAME, card)
        write_weights(tmp / WEIGHTS_NAME, module)
        for path in extra:
            shutil.copyfile(path, tmp / Path(path).name)
    return Path(directory)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; every failure is a one-line VidclsError."""
    if not Path(path).is_file():
        what = "is not a regular file (a FIFO, socket or device)" if Path(path).exists() else "not found"
        raise VidclsError(f"weights file {path} {what}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VidclsError(f"{path}: not a readable safetensors file ({exc})") from None


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Keys a state dict lacks, has in excess, or has with the wrong shape, against a model's."""
    return {"missing": sorted(set(expected) - set(state)),
            "unexpected": sorted(set(state) - set(expected)),
            "wrong shape": sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)}


def describe_keys(what: str, keys: list[str]) -> str:
    """'missing: a, b, c ... (12)': a one-line summary of a key list."""
    return f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, unused: Sequence[str] = ()) -> None:
    """Load a state dict in our layout strictly: every key in place with its shape, none left over.

    unused: keys of a foreign checkpoint that its converter found no place for (they count
    as unexpected: dropping trained weights silently would change the model). The one place
    that builds the "weights do not fit" error, naming `source`.
    """
    mismatch = state_mismatch(module.state_dict(), state)
    mismatch["unexpected"] = sorted([*mismatch["unexpected"], *unused])
    problems = [describe_keys(what, keys) for what, keys in mismatch.items() if keys]
    if problems:
        raise VidclsError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    check_weights(module, state, source)
    module.load_state_dict(state, strict=True)


def check_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights that would load silently and answer nonsense, naming the file and the tensor.

    A floating-point parameter given as an integer or bool tensor (load_state_dict would cast
    it, and the model would print confident labels), and NaN or infinity in any weight (every
    output would be NaN, which JSON cannot even hold). Keys the module lacks are left to the caller.
    """
    expected = module.state_dict()
    for key in sorted(set(state) & set(expected)):
        tensor = state[key]
        if expected[key].is_floating_point() and not tensor.is_floating_point():
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise VidclsError(f"{printable(source)}: tensor {printable(key)} is {dtype}, "
                              f"not floating point: not weights this model can use")
        if tensor.is_floating_point():
            check_finite(tensor, f"{printable(source)}: tensor {printable(key)}")
