"""A vidcls model directory: config.json (a ModelCard) + model.safetensors.

The lowest layer of flow 2: it knows how a model is described and stored, nothing about
where it comes from (zoo, Hub) or which foreign layout it was converted from, so the zoo
and the converters can both build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import VidclsError
from .fileio import atomic_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LAST = "last"  # a training run directory's latest checkpoint: itself a model directory
FORMAT_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    """How a model expects its clips: the recipe of the paper or training run it comes from."""

    frames: int = 8
    stride: int = 1  # frames between samples for dense sampling (the papers' 8x8, 16x4, 32x2)
    sampling: str = "segment"  # "segment": spread over the whole video; "dense": frames x stride
    size: int = 224
    resize: int | None = None  # short side before cropping; None = size
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    clips: int = 1  # test-time temporal clips of the recipe
    crops: int = 1  # test-time spatial crops of the recipe
    aspect: str = "crop"  # "crop": keep aspect, cut square crops; "squash": whole frame to size x size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VidclsError(f"unknown input option(s) {', '.join(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class ModelCard:
    """Everything about a model except its weights: family, hyper-parameters, input, labels."""

    name: str
    family: str
    arch: dict[str, Any]
    input: InputSpec = field(default_factory=InputSpec)
    labels: list[str] | None = None  # None: no trained head (an architecture without weights)

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
        except (KeyError, TypeError):
            raise VidclsError("config.json is not in vidcls format (needs 'family' and 'arch')") from None
        labels = labels_from_id2label(config["id2label"]) if "id2label" in config else None
        return cls(name=config.get("name", default_name), family=family, arch=arch,
                   input=InputSpec.from_dict(config.get("input", {})), labels=labels)


def labels_from_id2label(id2label: dict[str, str]) -> list[str]:
    """Class names in index order; the indices must be exactly 0..n-1."""
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
        raise VidclsError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VidclsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise VidclsError(f"{path}: expected a JSON object")
    return data


def read_vidcls_card(directory: Path) -> ModelCard:
    """The ModelCard of a directory in vidcls format."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise VidclsError(f"{directory}: no {CONFIG_NAME} (not a model directory)")
    return ModelCard.from_config(read_json(path), default_name=Path(directory).name)


def write_config(path: Path, card: ModelCard) -> None:
    """A model directory's config.json."""
    Path(path).write_text(json.dumps(card.to_config(), indent=2) + "\n")


def write_weights(path: Path, module: nn.Module) -> None:
    """A model's state dict as safetensors (CPU, contiguous: safetensors stores plain buffers)."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def save_model_dir(directory: Path, card: ModelCard, module: nn.Module) -> Path:
    """Write a vidcls model directory (config.json + model.safetensors) atomically."""
    with atomic_directory(directory) as tmp:
        write_config(tmp / CONFIG_NAME, card)
        write_weights(tmp / WEIGHTS_NAME, module)
    return Path(directory)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; every failure is a one-line VidclsError."""
    if not Path(path).is_file():
        raise VidclsError(f"weights file {path} not found")
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
    module.load_state_dict(state, strict=True)
