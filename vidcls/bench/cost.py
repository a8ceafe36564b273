"""The cost line of `vidcls predict`: MACs per view, views and peak memory of a run.

Counted from the model's card alone (model_cost on the meta device): nothing here runs the
benchmark sweep, its subprocesses or its matmul-rate measurement.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vidcls.bench.models import BenchModel, model_cost, significant
from vidcls.devices import PrecisionChoice
from vidcls.fileio import memo
from vidcls.zoo.modeldir import ModelCard


@dataclass(frozen=True)
class RunCost:
    """The cost fields `predict` reports for a run: MACs per view, views, peak memory."""

    gmacs: float
    views: int
    peak_memory_mib: float | None
    precision: str = "fp32"
    precision_reason: str = "asked for"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_cost(card: ModelCard, clips: int | None, crops: int | None, peak_memory_mib: float | None,
             frames: int | None = None, precision: PrecisionChoice | None = None) -> RunCost:
    """The cost of a predict run: GMACs of one view at the run's clip length (`frames`, default the
    card's; the same for every video, so counted once), the views per video (clips x crops, recipe
    by default)."""
    views = (clips or card.input.clips) * (crops or card.input.crops)
    chosen = precision or PrecisionChoice("fp32", "asked for")
    return RunCost(significant(view_gmacs(card, frames)), views, significant(peak_memory_mib), chosen.precision,
                   chosen.reason)


def view_gmacs(card: ModelCard, frames: int | None = None) -> float:
    """GMACs of one view of the model a card describes, at `frames` (default the card's) and the
    card's size: the one count behind predict's cost line, export's facts and benchmark's rows."""
    return _view_gmacs(json.dumps(card.to_config(), sort_keys=True), frames)


@functools.lru_cache(maxsize=32)
def _view_gmacs(config: str, frames: int | None) -> float:
    """Counting runs a forward pass on the meta device (0.1 s for demo-motion, 2 s more in a fresh process),
    so it is counted once per model and clip length: in this process, and on disk for the next ones."""
    model = BenchModel.from_card(ModelCard.from_config(json.loads(config), "model"))
    frames = frames or model.frames
    key = {"family": model.family, "arch": model.arch, "frames": frames, "size": model.size, "torch": torch.__version__}
    return memo("view-gmacs", key, lambda: model_cost(model, frames, model.size).flops.gmacs)


def cost_line(cost: RunCost, timings: Sequence[dict[str, float]]) -> str:
    """The one-line summary printed under predict's table; times are summed over the run's videos."""
    memory = "n/a" if cost.peak_memory_mib is None else f"{cost.peak_memory_mib:.0f} MiB"
    totals = {step: sum(t.get(step, 0.0) for t in timings) for step in ("decode", "preprocess", "model")}
    split = ", ".join(f"{step} {ms:.0f} ms" for step, ms in totals.items())
    return (f"cost: {cost.gmacs:.4g} GMACs per view x {cost.views} views, {cost.precision} "
            f"({cost.precision_reason}), peak memory {memory}, time {split}")
