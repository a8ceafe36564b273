"""What is benchmarked: a model reference becomes an architecture to build at any clip shape,
and its static cost (MACs, parameters) at that shape.

Cost does not depend on the weights, so nothing here reads or downloads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidcls.bench.flops import FlopCount, UncountedAttentionError, count_macs, parameter_counts
from vidcls.errors import UsageError
from vidcls.models import build_model, families, make_config
from vidcls.models.validate import check_tiling
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.onnx import OnnxModule, open_session, read_onnx_card
from vidcls.zoo.resolve import resolve


@dataclass(frozen=True)
class BenchModel:
    """A model to cost: family, architecture, and the recipe it is fed with.

    The benchmark rebuilds the architecture for each frame count and size (where the
    config has `num_frames` / `img_size`), so learned position tables are sized for the
    shape instead of interpolated: cost does not depend on the weights.
    """

    name: str
    family: str
    arch: dict[str, Any]
    frames: int
    size: int
    views: int = 1  # clips x crops of the recipe's test protocol
    onnx: str | None = None  # an exported .onnx file: timed on ONNX Runtime, costed on the torch graph
    runtime: str = "torch"  # torch, onnxruntime or onnxruntime-int8

    @classmethod
    def from_card(cls, card: ModelCard) -> BenchModel:
        spec = card.input
        return cls(name=card.name, family=card.family, arch=dict(card.arch), frames=spec.frames,
                   size=spec.size, views=spec.clips * spec.crops)

    @classmethod
    def from_onnx(cls, ref: str, path: Path) -> BenchModel:
        """An exported file, named by its REF (side by side with the torch model of the same name)."""
        card, facts = read_onnx_card(path)
        runtime = "onnxruntime-int8" if facts.get("quantize") == "int8" else "onnxruntime"
        return dataclasses.replace(cls.from_card(card), name=ref, onnx=str(path), runtime=runtime)

    def arch_at(self, frames: int, size: int) -> dict[str, Any]:
        """The architecture re-sized for clips of `frames` x `size` x `size`."""
        fields = {f.name for f in dataclasses.fields(families()[self.family].Config)}
        shape = {"num_frames": frames, "img_size": size}
        return {**self.arch, **{k: v for k, v in shape.items() if k in fields}}

    def check_shape(self, frames: int, size: int) -> None:
        """UsageError if the patch embedding cannot cut clips of `frames` x `size` x `size`
        (models.validate.check_tiling: the nearest valid counts). Checked before building, so a
        sweep fails at once with the valid choices instead of deep inside a forward pass. An
        exported graph takes only the shape it was exported at.
        """
        if self.onnx is not None and (frames, size) != (self.frames, self.size):
            raise UsageError(f"{self.name}: exported for {self.frames} x {self.size} px clips, asked for {frames} x "
                             f"{size}; use --frames {self.frames} --size {self.size}, or export it again at that shape")
        try:
            check_tiling(make_config(self.family, self.arch), frames, size)
        except UsageError as exc:
            raise UsageError(f"{self.name}: {exc}") from None

    def build(self, frames: int, size: int) -> nn.Module:
        """A randomly initialised torch model for this shape, on the current default device, in eval mode
        (for an exported file too: its cost is counted on the torch graph)."""
        self.check_shape(frames, size)
        return build_model(self.family, self.arch_at(frames, size)).eval()

    def runner(self, frames: int, size: int, device: torch.device) -> nn.Module:
        """What is timed: the torch model, or the exported file on ONNX Runtime (called like it)."""
        if self.onnx is None:
            with torch.device(device):
                return self.build(frames, size)
        self.check_shape(frames, size)
        return OnnxModule(open_session(Path(self.onnx), device), device)


def resolve_models(refs: Sequence[str]) -> list[BenchModel]:
    """Model references (zoo names, hf://, directories, exported .onnx files) -> what the benchmark
    builds; no torch weights read."""
    models = []
    for ref in refs:
        resolved = resolve(ref, need_weights=False)
        onnx = resolved.weights if resolved.weights is not None and resolved.weights.suffix == ".onnx" else None
        models.append(BenchModel.from_onnx(ref, onnx) if onnx else BenchModel.from_card(resolved.card))
    return models


@dataclass(frozen=True)
class ModelCost:
    """Static cost of a model at one clip shape: per-view MACs and parameters."""

    flops: FlopCount
    params: int
    trainable_params: int


def model_cost(model: BenchModel, frames: int, size: int) -> ModelCost:
    """Count MACs of one view and the parameters, on the meta device when the model allows.

    A model whose forward needs real data (data-dependent shapes) falls back to a real CPU
    forward, which is exact but takes the model's real time and memory.
    """
    try:
        with torch.device("meta"):
            module = model.build(frames, size)
            clip = torch.empty(1, 3, frames, size, size)
            flops = count_macs(module, clip)
    except (NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, UncountedAttentionError):
            raise
        module = model.build(frames, size)
        flops = count_macs(module, torch.zeros(1, 3, frames, size, size))
    return ModelCost(flops, *parameter_counts(module))


def significant(value: float | None, digits: int = 6) -> float | None:
    """Round a reported number to significant digits, so tiny and full-size models keep the
    same relative precision."""
    return None if value is None else float(f"{value:.{digits}g}")
