"""What every export format shares: the torch model exported, its card at the exported shape, the report.

Each format (`export.onnx`, `export.openvino`) writes its file from the same starting point
(`source_model`: a REF loaded as a torch model, refused if it already is an exported graph,
and run once at the exported shape so that a shape the model cannot take is one clear line)
and reports in the same `ExportReport`; `export.parity` checks every file the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidcls.errors import UsageError, first_line
from vidcls.export.parity import Parity, random_clip
from vidcls.inference.options import RunOptions
from vidcls.inference.predict import with_labels
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.resolve import LoadedModel, load_model
from vidcls.zoo.runtime import RuntimeModule

QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class ExportReport:
    """What `vidcls export` wrote: the file, its format, shape and size, how long it took, its parity."""

    path: Path
    name: str
    family: str
    frames: int
    size: int
    batch: str | int
    opset: int | None  # the ONNX opset; None for OpenVINO
    quantize: str | None
    gmacs: float  # of one view, counted on the torch graph
    seconds: float  # exporting (and quantising), parity check excluded
    bytes: int  # the file (for OpenVINO: model.xml and model.bin together)
    parity: Parity
    format: str = "onnx"  # or "openvino"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


MAX_BATCH = 4096  # a fixed batch the parity check runs once: as many views as predict's --batch-size allows


def parse_batch(batch: str | int) -> str | int:
    """'dynamic' or a positive batch size (an int, or its text)."""
    if batch == "dynamic":
        return batch
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= MAX_BATCH:
        raise UsageError(f"--batch must be dynamic or an integer 1..{MAX_BATCH}, got {batch!r}")
    return value


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be {'|'.join(QUANTIZATIONS)}, got {quantize!r}")


def source_model(ref: str, frames: int | None, size: int | None, weights: str | Path | None,
                 allow_random: bool, labels: str | Sequence[str] | None = None,
                 prompt: str | None = None) -> tuple[LoadedModel, ModelCard]:
    """The torch model to export (eval mode) and its card at the exported shape.

    A model that reads label names (X-CLIP) is exported with one label set folded in (`labels`, else
    its own): the text encoder runs here, once, and the graph holds the encoded labels as constants
    (the video-specific prompting still runs in it); its card names those labels.
    The model runs once on that shape first: one that cannot take it says why here, not inside
    a tracer's error."""
    loaded = load_model(ref, weights=weights, allow_random=allow_random)
    if isinstance(loaded.module, RuntimeModule):
        raise UsageError(f"{ref} is already an exported model")
    loaded = with_labels(loaded, RunOptions(labels=labels, prompt=prompt))
    card = loaded.card.at_shape(frames, size)
    try:
        with torch.no_grad():
            loaded.module.eval()(random_clip(card, 1))
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"{ref} cannot run on {card.input.frames} frames of {card.input.size} px: "
                         f"{first_line(exc)}") from None
    return loaded, card
