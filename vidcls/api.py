"""Library calls that take what a user types (REFs, paths, option values) for the commands
whose work spans several modules; `vidcls.cli` renders their results and nothing more.

The other commands call their module's function directly (`vidcls.predict`, `vidcls.download`,
`vidcls.train_model`, `vidcls.convert_checkpoint`); the package namespace names them all.
"""

from __future__ import annotations

import contextlib
import os

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .bench.cost import RunCost, run_cost
from .engine import EngineSettings, Recipe
from .bench.memory import PeakMemory
from .errors import UsageError
from .inference import ModelRef, Prediction, check_options, classify, ready_model
from .inputs import gather, parse_shard, stdin_directory, take_shard
from .results import ResultWriter, merge, output_format, rank_path, read_records
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
    """A `vidcls predict` run: the Predictions of the videos classified by this call, what
    the run cost, and what was not classified (skipped folder files, videos resumed from
    --output, another shard's videos)."""

    predictions: list[Prediction]
    cost: RunCost
    total: int = 0  # videos in the inputs, all shards
    resumed: int = 0  # videos already in --output (not redone)
    skipped_note: str | None = None  # files in folders not taken as videos
    output: Path | None = None
    merged: int | None = None  # rank 0 under torchrun: records in the merged --output

    def to_json(self) -> list[dict[str, Any]]:
        """The `predict --json` array: each prediction with the run's cost fields."""
        return [self.record(p) for p in self.predictions]

    def record(self, prediction: Prediction) -> dict[str, Any]:
        return {**prediction.to_json(), **self.cost.to_json()}


@dataclass(frozen=True)
class Placement:
    """Which part of the inputs this process classifies and where its results go."""

    rank: int = 0
    world_size: int = 1
    torchrun: bool = False

    @classmethod
    def of(cls, shard: str | None) -> Placement:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            if shard is not None:
                raise UsageError("--shard is chosen by torchrun itself (each rank takes RANK/WORLD_SIZE); drop --shard")
            return cls(int(os.environ.get("RANK", "0")), world, torchrun=True)
        if shard is None:
            return cls()
        index, count = parse_shard(shard)
        return cls(index, count)


def _done_videos(output: Path | None, place: Placement, resume: bool) -> set[str]:
    """Videos whose results are already in --output (and, under torchrun, this rank's file)."""
    if output is None:
        if resume:
            raise UsageError("--resume continues an --output file; give --output FILE")
        return set()
    files = [output, rank_path(output, place.rank)] if place.torchrun else [output]
    if not resume:
        for file in files:
            if file.exists() and file.stat().st_size:
                raise UsageError(f"--output {file} already exists: add --resume to continue it, "
                                 "or remove it to start over")
        return set()
    return {record["video"] for file in files for record in read_records(file)}


def predict_run(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
                device: str | torch.device | None = None, output: str | Path | None = None,
                resume: bool = False, shard: str | None = None,
                on_result: Callable[[Prediction], None] | None = None,
                on_start: Callable[[int], None] | None = None, **options: Any) -> PredictRun:
    """predict() for a command: streaming to --output, resume, shards, torchrun, and the
    run's cost (GMACs per view, views per video, peak memory of classifying).

    output: a .jsonl/.json/.csv file written one record per video as each completes (every
    line flushed; Ctrl-C keeps the finished ones); resume skips the videos already in it.
    shard "I/N" takes every N-th video from position I; under torchrun each rank takes its
    own and writes OUTPUT.rankR, and rank 0 merges them into OUTPUT in input order.
    options are predict's (top_k, clips, crops, frames, stride, sampling, precision,
    batch_size, workers, threads). on_start(count) is called with the number of videos to
    classify, on_result(prediction) as each arrives. Inputs that hold no video at all are a
    UsageError: a command run on an empty folder should say so rather than print nothing.
    """
    engine_keys = ("batch_size", "workers", "threads", "precision")
    recipe_keys = ("frames", "stride", "sampling", "clips", "crops")
    top_k = options.pop("top_k", 5)
    check_options(top_k, **{k: options[k] for k in ("clips", "crops", "precision", "frames", "stride", "sampling")
                            if options.get(k) is not None})
    output = Path(output) if output is not None else None
    if output is not None:
        output_format(output)
    place = Placement.of(shard)
    if place.torchrun:
        from .train.distributed import setup

        if output is None:
            raise UsageError("under torchrun, give --output FILE: each process writes FILE.rankR and rank 0 merges them")
        device = setup("auto" if device is None else str(device)).device
    loaded, target = ready_model(model, weights, device)
    with stdin_directory() as spool:
        inputs = gather(videos, Path(spool))
        if not inputs.videos:
            raise UsageError("no video files found in the given paths"
                             + (f" ({inputs.skipped_note()})" if inputs.skipped else ""))
        mine = take_shard(inputs.videos, place.rank, place.world_size)
        done = _done_videos(output, place, resume)
        todo = [v for v in mine if v.name not in done]
        if on_start is not None:
            on_start(len(todo))
        recipe = Recipe.of(loaded.card.input, **{k: options.get(k) for k in recipe_keys})
        settings = EngineSettings(**{k: options[k] for k in engine_keys if options.get(k) is not None})
        cost = run_cost(loaded.card, options.get("clips"), options.get("crops"), 0.0)
        run = PredictRun([], cost, len(inputs.videos), len(mine) - len(todo), inputs.skipped_note(), output)
        target_file = rank_path(output, place.rank) if place.torchrun and output else output
        with PeakMemory(target) as peak, contextlib.ExitStack() as stack:
            writer = (stack.enter_context(ResultWriter(target_file, top_k, resume=resume and target_file.exists()))
                      if target_file is not None else None)
            for prediction in classify(todo, loaded, target, top_k=top_k, recipe=recipe, settings=settings):
                run.predictions.append(prediction)
                if writer is not None:
                    writer.write(run.record(prediction))
                if on_result is not None:
                    on_result(prediction)
    run.cost = run_cost(loaded.card, options.get("clips"), options.get("crops"), peak.mib)
    if place.torchrun:
        run.merged = _finish_torchrun(place, output, [v.name for v in inputs.videos], top_k)
    return run


def _finish_torchrun(place: Placement, output: Path, order: list[str], top_k: int) -> int | None:
    """Wait for every rank (a barrier), then rank 0 merges the rank files into --output."""
    from .train.distributed import Dist, teardown

    teardown(Dist(place.rank, place.world_size), finished=True)
    return merge(output, place.world_size, order, top_k) if place.rank == 0 else None


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
