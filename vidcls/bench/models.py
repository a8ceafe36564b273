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
from vidcls.zoo.modeldir import InputSpec, ModelCard
from vidcls.zoo.onnx import read_onnx_card
from vidcls.zoo.openvino import read_ir_card
from vidcls.zoo.resolve import EXPORTED_SUFFIXES, exported_module, resolve


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
    exported: str | None = None  # an exported .onnx or .xml file: timed on its runtime, costed on the torch graph
    runtime: str = "torch"  # torch, openvino (converted), onnxruntime[-int8] or openvino[-int8] (exported files)

    @classmethod
    def from_card(cls, card: ModelCard) -> BenchModel:
        spec = card.input
        return cls(name=card.name, family=card.family, arch=dict(card.arch), frames=spec.frames,
                   size=spec.size, views=spec.clips * spec.crops)

    @classmethod
    def from_exported(cls, ref: str, path: Path) -> BenchModel:
        """An exported file, named by its REF (side by side with the torch model of the same name)."""
        card, facts = read_ir_card(path) if path.suffix == ".xml" else read_onnx_card(path)
        runtime = "openvino" if path.suffix == ".xml" else "onnxruntime"
        runtime += "-int8" if facts.get("quantize") == "int8" else ""
        return dataclasses.replace(cls.from_card(card), name=ref, exported=str(path), runtime=runtime)

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
        if self.exported is not None and (frames, size) != (self.frames, self.size):
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
        """What is timed: the torch model, its OpenVINO conversion (runtime "openvino"), or the exported
        file on its runtime (each called like the torch model)."""
        if self.exported is not None:
            self.check_shape(frames, size)
            return exported_module(Path(self.exported), device)
        if self.runtime == "openvino":
            from vidcls.zoo.openvino import OpenVinoModule, check_device
            from vidcls.zoo.openvino_convert import cached_ir

            check_device(device)
            torch.manual_seed(0)  # the same random weights every run: the conversion is cached by their digest
            card = ModelCard(self.name, self.family, self.arch_at(frames, size), InputSpec(frames=frames, size=size))
            return OpenVinoModule(cached_ir(self.build(frames, size), card), device)
        with torch.device(device):
            return self.build(frames, size)


def resolve_models(refs: Sequence[str], runtime: str = "torch") -> list[BenchModel]:
    """Model references (zoo names, hf://, directories, exported .onnx or .xml files) -> what the benchmark
    builds; no torch weights read. runtime "openvino" times the torch models converted to OpenVINO
    (an exported file runs on its own runtime either way)."""
    models = []
    for ref in refs:
        resolved = resolve(ref, need_weights=False)
        exported = resolved.weights if resolved.weights is not None and resolved.weights.suffix in EXPORTED_SUFFIXES \
            else None
        models.append(BenchModel.from_exported(ref, exported) if exported
                      else dataclasses.replace(BenchModel.from_card(resolved.card), runtime=runtime))
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
