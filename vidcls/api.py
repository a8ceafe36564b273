"""Library calls that take what a user types (REFs, paths, option values) for the commands
whose work spans several modules; `vidcls.cli` renders their results and nothing more.

The other commands call their module's function directly (`vidcls.predict`, `vidcls.download`,
`vidcls.train_model`, `vidcls.convert_checkpoint`); the package namespace names them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .bench.cost import RunCost, run_cost
from .bench.memory import PeakMemory
from .errors import UsageError
from .inference import ModelRef, Prediction, find_videos, predict, ready_model
from .zoo import zoo_entries, zoo_summary

if TYPE_CHECKING:  # predict's path must not load the sweep (vidcls.bench's docstring): benchmark imports it
    from .bench.sweep import BenchPoint, BenchReport


def list_models() -> list[dict[str, Any]]:
    """The zoo, one row per model name usable as a REF (what `vidcls models --json` prints).

    Each row has name, family, attention (linear or quadratic), frames, stride, size, views,
    weights (where they come from: package:NAME, hf://OWNER/REPO@REV or a URL; None for an
    architecture without weights), labels (dataset name or None), top1, top1_views and gmacs
    as published, verified, zoo ("vidcls" or the VIDCLS_ZOO file) and description.
    """
    return [zoo_summary(name) for name in zoo_entries()]


@dataclass
class PredictRun:
    """A `vidcls predict` run: each video's Prediction, and what the run cost."""

    predictions: list[Prediction]
    cost: RunCost

    def to_json(self) -> list[dict[str, Any]]:
        """The `predict --json` array: each prediction with the run's cost fields."""
        return [{**p.to_json(), **self.cost.to_json()} for p in self.predictions]


def predict_run(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
                device: str | torch.device | None = None, **options: Any) -> PredictRun:
    """predict() with the run's cost: GMACs per view, views per video, and the peak memory
    of classifying (model loading excluded).

    options are predict's (top_k, clips, crops, precision, batch_size, on_video, on_result).
    Unlike predict, inputs that hold no video at all are a UsageError: a command run on an
    empty folder should say so rather than print nothing.
    """
    loaded, target = ready_model(model, weights, device)
    paths = find_videos(videos)
    if not paths:
        raise UsageError("no video files found in the given paths")
    with PeakMemory(target) as peak:
        predictions = predict(paths, loaded, device=target, **options)
    return PredictRun(predictions, run_cost(loaded.card, options.get("clips"), options.get("crops"), peak.mib))


def benchmark(models: str | Sequence[str], frames: Sequence[int] = (8, 16, 32), size: int | None = None, *,
              isolate: bool | None = None, on_point: Callable[[BenchPoint], None] | None = None,
              on_warning: Callable[[str], None] | None = None, **settings: Any) -> BenchReport:
    """Measure how each model's cost grows with the number of frames (`vidcls benchmark`).

    models: one REF or several (zoo names, hf:// refs, model directories); only their
    architectures are built, no weights are read. settings are RunSettings' fields
    (batch_size, device, precision, warmup, repeats, compile, threads). isolate, on_point
    and on_warning are vidcls.bench.benchmark's.
    """
    from .bench.measurement import RunSettings
    from .bench.models import resolve_models
    from .bench.sweep import benchmark as sweep

    refs = [models] if isinstance(models, str) else list(models)
    return sweep(resolve_models(refs), frames, size, RunSettings(**settings), isolate=isolate,
                           on_point=on_point, on_warning=on_warning)
