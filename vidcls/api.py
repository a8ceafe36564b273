"""Library calls that take what a user types (REFs, paths, option values) for the commands
whose work spans several modules; `vidcls.cli` renders their results and nothing more.

The other commands call their module's function directly (`vidcls.predict`, `vidcls.download`,
`vidcls.train_model`, `vidcls.convert_checkpoint`); the package namespace names them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vidcls.bench.cost import RunCost
from vidcls.bench.memory import PeakMemory
from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.inference.engine import Recipe
from vidcls.inference.options import RunOptions, TimelineOptions
from vidcls.inference.predict import (
    ModelRef,
    Prediction,
    classify,
    on_runtime,
    plan_run,
    ready_model,
    runtime_device,
    top_k_labels,
)
from vidcls.inference.results import ResultWriter, merge, output_format, rank_path, read_records
from vidcls.video.inputs import VideoInput, gather, parse_shard, stdin_directory, take_shard
from vidcls.viz.plotting import require_matplotlib
from vidcls.zoo.catalog import zoo_entries, zoo_summary
from vidcls.zoo.resolve import LoadedModel

if TYPE_CHECKING:  # predict's path must not load the sweep (vidcls.bench's docstring): benchmark imports it
    from vidcls.bench.sweep import BenchPoint, BenchReport
    from vidcls.inference.metrics import EvalSummary


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


def _collect(run: PredictRun, predictions: Callable[[], Iterator[Prediction]], target: torch.device, *,
             top_k: int, file: Path | None, resume: bool, on_result: Callable[[Prediction], None] | None,
             extra: dict[str, dict[str, Any]] | None = None) -> float:
    """Gather predictions() into run.predictions, streaming each record to `file` (with its
    `extra` fields, by video name) as it completes; returns the peak memory of the run (MiB)."""
    columns = sorted({k for fields in (extra or {}).values() for k in fields})
    with PeakMemory(target) as peak, contextlib.ExitStack() as stack:
        writer = (stack.enter_context(ResultWriter(file, top_k, resume=resume and file.exists(), extra=columns))
                  if file is not None else None)
        for prediction in predictions():
            run.predictions.append(prediction)
            if writer is not None:
                writer.write({**run.record(prediction), **(extra or {}).get(prediction.video, {})})
            if on_result is not None:
                on_result(prediction)
    return peak.mib


def _timelines(videos: list[VideoInput], loaded: LoadedModel, target: torch.device, options: RunOptions,
               recipe: Recipe, over_time: TimelineOptions) -> Iterator[Prediction]:
    """One Prediction per video, each with its timeline (vidcls.inference.timeline: one pass over the
    file); a video that fails, or whose plot or annotated video cannot be written, gets the error."""
    from vidcls.inference.timeline import timeline
    from vidcls.viz.overlay import write_annotated_video
    from vidcls.viz.timeline import plot_timeline

    several = len(videos) > 1
    for item in videos:
        start = time.perf_counter()
        result = Prediction(video=item.name, model=loaded.name)
        try:
            found = timeline(item.source, loaded, window_s=over_time.window_s, hop_s=over_time.hop_s,
                             smooth=over_time.smooth, top_k=options.top_k, clips=recipe.clips, crops=recipe.crops,
                             device=target, precision=options.precision, batch_size=options.batch_size)
            if over_time.plot is not None:
                plot_timeline(found, TimelineOptions.path_for(over_time.plot, item.name, several),
                              title=f"{loaded.name}: {item.name}")
            if over_time.out_video is not None:
                write_annotated_video(item.source, found,
                                      TimelineOptions.path_for(over_time.out_video, item.name, several))
        except VidclsError as exc:
            result.error = first_line(str(exc).removeprefix(f"{item.source}: "))
        except Exception as exc:  # noqa: BLE001 - the model, a plot path, the encoder: one video's failure
            result.error = f"timeline failed ({type(exc).__name__}: {first_line(exc)})"
        else:
            result.top_k = top_k_labels(found.probs.mean(dim=0), loaded.labels, options.top_k)
            result.timeline = found.to_json()
            result.frames_used = sum(len(window.indices) for window in found.windows)
            result.warnings = found.stats.warnings()
        result.processing_s = round(time.perf_counter() - start, 4)
        yield result


@dataclass(frozen=True)
class _Job:
    """What predict_run and evaluate_run share once their inputs are known: the videos, where
    the records go, and the callbacks."""

    videos: list[VideoInput]
    output: Path | None
    resume: bool
    place: Placement
    on_start: Callable[[int], None] | None
    on_result: Callable[[Prediction], None] | None
    extra: dict[str, dict[str, Any]] | None = None  # fields added to each video's record (evaluate: its label)


def _run(job: _Job, loaded: LoadedModel, target: torch.device, options: RunOptions,
         over_time: TimelineOptions | None = None) -> PredictRun:
    """Classify the job's videos not already in its output, streaming each record as it completes."""
    done = _done_videos(job.output, job.place, job.resume)
    mine = take_shard(job.videos, job.place.rank, job.place.world_size)
    todo = [v for v in mine if v.name not in done]
    if job.on_start is not None:
        job.on_start(len(todo))
    recipe, settings, cost = plan_run(loaded, options)
    # a timeline runs the card's own frames (TimelineOptions has no --frames), so its IR is converted at those
    loaded = on_runtime(loaded, options.runtime, None if over_time is not None else recipe.spec.frames)
    run = PredictRun([], cost, len(job.videos), len(mine) - len(todo), output=job.output)
    if over_time is not None:
        stream = functools.partial(_timelines, todo, loaded, target, options, recipe, over_time)
    else:
        stream = functools.partial(classify, todo, loaded, target, top_k=options.top_k, recipe=recipe,
                                   settings=settings)
    file = rank_path(job.output, job.place.rank) if job.place.torchrun and job.output else job.output
    peak = _collect(run, stream, target, top_k=options.top_k, file=file, resume=job.resume,
                    on_result=job.on_result, extra=job.extra)
    run.cost = dataclasses.replace(cost, peak_memory_mib=peak)
    return run


def _checked_output(output: str | Path | None) -> Path | None:
    """--output as a Path whose suffix names a format we write (refused before any work)."""
    if output is None:
        return None
    output_format(Path(output))
    return Path(output)


def predict_run(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
                device: str | torch.device | None = None, output: str | Path | None = None,
                resume: bool = False, shard: str | None = None, timeline: TimelineOptions | None = None,
                on_result: Callable[[Prediction], None] | None = None,
                on_start: Callable[[int], None] | None = None, **options: Any) -> PredictRun:
    """predict() for a command: streaming to --output, resume, shards, torchrun, and the
    run's cost (GMACs per view, views per video, peak memory of classifying).

    output: a .jsonl/.json/.csv file written one record per video as each completes (every
    line flushed; Ctrl-C keeps the finished ones); resume skips the videos already in it.
    shard "I/N" takes every N-th video from position I; under torchrun each rank takes its
    own and writes OUTPUT.rankR, and rank 0 merges them into OUTPUT in input order.
    options are RunOptions' fields (top_k, clips, crops, frames, stride, sampling, precision,
    batch_size, workers, threads, runtime): a name that is not one is a TypeError. on_start(count) is
    called with the number of videos to classify, on_result(prediction) as each arrives.
    Inputs that hold no video at all are a UsageError: a command run on an empty folder should
    say so rather than print nothing. timeline (TimelineOptions) labels each video over time
    instead (vidcls.inference.timeline): each Prediction then carries its windows and segments,
    and its top_k is the mean over windows.
    """
    run_options = RunOptions(**options)
    if timeline is not None and timeline.plot is not None:
        require_matplotlib()  # before the run, not after it
    output = _checked_output(output)
    place = Placement.of(shard)
    if place.torchrun:
        from vidcls.devices import setup

        if output is None:
            raise UsageError("under torchrun, give --output FILE: "
                             "each process writes FILE.rankR and rank 0 merges them")
        device = setup("auto" if device is None else str(device)).device
    loaded, target = ready_model(model, weights, runtime_device(device, run_options.runtime))
    with stdin_directory() as spool:
        inputs = gather(videos, Path(spool))
        if not inputs.videos:
            raise UsageError("no video files found in the given paths"
                             + (f" ({inputs.skipped_note()})" if inputs.skipped else ""))
        job = _Job(inputs.videos, output, resume, place, on_start, on_result)
        run = _run(job, loaded, target, run_options, timeline)
    run.skipped_note = inputs.skipped_note()
    if place.torchrun:
        run.merged = _finish_torchrun(place, output, [v.name for v in inputs.videos], run_options.top_k)
    return run


def _finish_torchrun(place: Placement, output: Path, order: list[str], top_k: int) -> int | None:
    """Wait for every rank (a barrier), then rank 0 merges the rank files into --output."""
    from vidcls.devices import Dist, teardown

    teardown(Dist(place.rank, place.world_size), finished=True)
    return merge(output, place.world_size, order, top_k) if place.rank == 0 else None


@dataclass
class EvalRun:
    """A `vidcls evaluate` run: the accuracy summary, the predictions made by this call (not
    those resumed from --output), and what the run cost."""

    summary: EvalSummary
    run: PredictRun


def evaluate_run(model: ModelRef, data: str | Path, *, weights: str | Path | None = None,
                 device: str | torch.device | None = None, output: str | Path | None = None,
                 resume: bool = False, plot: str | Path | None = None,
                 on_result: Callable[[Prediction], None] | None = None,
                 on_start: Callable[[int], None] | None = None, **options: Any) -> EvalRun:
    """Accuracy of `model` on DATA (a class-folder tree, a `path label` list or a CSV, as in
    `train`): top-1, top-5, mean class accuracy, per-class accuracy, confusion matrix.

    predict_run on the data's videos, each record carrying its true `label`, then the metrics.
    The data's labels are matched to the model's before any video is decoded (an unknown one
    is a UsageError). options are RunOptions' fields but top_k (always 5: top-5 is reported).
    output / resume stream the per-video records as predict_run does; the summary then covers
    every video in the file, resumed ones included. plot writes the confusion matrix as PNG.
    """
    from vidcls.inference.metrics import match_labels, summarize
    from vidcls.train.data import read_samples
    from vidcls.viz.confusion import plot_confusion

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("evaluate runs in one process; use predict --output under torchrun, then evaluate --resume")
    run_options = RunOptions(top_k=5, **options)
    if plot is not None:
        require_matplotlib()  # before the run, not after it
    output = _checked_output(output)
    loaded, target = ready_model(model, weights, runtime_device(device, run_options.runtime))
    samples = read_samples(data)
    mapping = match_labels([s.label for s in samples], loaded.labels, loaded.name)
    truth = {str(s.path): {"label": mapping[s.label]} for s in samples}
    items = [VideoInput(str(s.path), str(s.path)) for s in samples]
    run = _run(_Job(items, output, resume, Placement(), on_start, on_result, truth), loaded, target, run_options)
    if output is not None:
        records = [r for r in read_records(output) if r["video"] in truth]
    else:
        records = [{**p.to_json(), **truth[p.video]} for p in run.predictions]
    summary = summarize(records, loaded.name, loaded.labels)
    if plot is not None:
        plot_confusion(summary, Path(plot))
    return EvalRun(summary, run)


def benchmark(models: str | Sequence[str], frames: Sequence[int] = (8, 16, 32), size: int | None = None, *,
              isolate: bool | None = None, on_point: Callable[[BenchPoint], None] | None = None,
              on_warning: Callable[[str], None] | None = None, **settings: Any) -> BenchReport:
    """Measure how each model's cost grows with the number of frames (`vidcls benchmark`).

    models: one REF or several (zoo names, hf:// refs, model directories, exported files); only
    their architectures are built, no weights are read. settings are RunSettings' fields
    (batch_size, device, precision, warmup, repeats, compile, threads, runtime). isolate,
    on_point and on_warning are vidcls.bench.benchmark's.
    """
    from vidcls.bench.measurement import RunSettings
    from vidcls.bench.models import resolve_models
    from vidcls.bench.sweep import benchmark as sweep

    refs = [models] if isinstance(models, str) else list(models)
    run_settings = RunSettings(**settings)
    run_settings = dataclasses.replace(run_settings, device=str(runtime_device(run_settings.device,
                                                                               run_settings.runtime)))
    return sweep(resolve_models(refs, run_settings.runtime), frames, size, run_settings, isolate=isolate,
                           on_point=on_point, on_warning=on_warning)
