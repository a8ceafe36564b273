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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vidcls.bench.cost import RunCost
from vidcls.bench.memory import PeakMemory
from vidcls.errors import UsageError
from vidcls.inference.embed import Embedding, TextEmbedding, embed_texts, embed_videos, embedding_meta
from vidcls.inference.engine import Recipe, waited_on
from vidcls.inference.options import EmbedOptions, RunOptions, TimelineOptions, parse_labels, timeline_outputs
from vidcls.inference.predict import (
    ModelRef,
    Prediction,
    classify,
    model_sha256,
    on_runtime,
    plan_run,
    ready_model,
    run_settings,
    runtime_device,
    with_labels,
)
from vidcls.inference.preflight import Placement, checked_output, done_records, writing
from vidcls.inference.results import Record, ResultWriter, check_same_run, merge, rank_path, read_records
from vidcls.inference.vectors import FORMATS as VECTOR_FORMATS
from vidcls.inference.vectors import VectorWriter, check_same_meta, merge_vectors, records_path
from vidcls.video.inputs import InputList, VideoInput, gather, stdin_directory, take_shard
from vidcls.viz.plotting import require_matplotlib
from vidcls.viz.timeline_run import timeline_prediction
from vidcls.zoo.catalog import list_models as list_models  # re-exported: vidcls.list_models, torch-free
from vidcls.zoo.resolve import LoadedModel

if TYPE_CHECKING:  # predict's path must not load the sweep (vidcls.bench's docstring): benchmark imports it
    from vidcls.bench.sweep import BenchPoint, BenchReport
    from vidcls.inference.metrics import EvalSummary
    from vidcls.train.config import TrainResult


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
    settings: dict[str, Any] | None = None  # what the records mean (predict.run_settings): each record's `run`

    def to_json(self) -> list[dict[str, Any]]:
        """The `predict --json` array: each prediction with the run's cost fields and its `run`."""
        return [self.record(p) for p in self.predictions]

    def record(self, prediction: Prediction) -> dict[str, Any]:
        return {**prediction.to_json(), **self.cost.to_json(), **({"run": self.settings} if self.settings else {})}


def _collect(results: list, stream: Callable[[], Iterator[Any]], target: torch.device,
             sink: Callable[[], contextlib.AbstractContextManager[Callable[[Any], None]]] | None,
             on_result: Callable[[Any], None] | None, keep: Callable[[Any], Any] = lambda result: result) -> float:
    """Gather stream() into `results` (each through `keep`), passing each result to the writer
    sink() opens as it completes, then to on_result; returns the peak memory of the run (MiB)."""
    with PeakMemory(target, collect=False) as peak, contextlib.ExitStack() as stack:
        write = stack.enter_context(sink()) if sink is not None else None
        for result in stream():
            results.append(keep(result))
            if write is not None:
                write(result)
            if on_result is not None:
                on_result(result)
    return peak.mib


@contextlib.contextmanager
def _prediction_sink(run: PredictRun, file: Path, top_k: int, resume: bool,
                     extra: dict[str, dict[str, Any]] | None) -> Iterator[Callable[[Prediction], None]]:
    """Each Prediction as the run's record, with its `extra` fields by video name (evaluate: its label)."""
    columns = sorted({k for fields in (extra or {}).values() for k in fields})
    with ResultWriter(file, top_k, resume=resume and file.exists(), extra=columns) as writer:
        yield lambda prediction: writer.write({**run.record(prediction), **(extra or {}).get(prediction.video, {})})


def _timelines(videos: list[VideoInput], loaded: LoadedModel, target: torch.device, options: RunOptions,
               recipe: Recipe, over_time: TimelineOptions,
               targets: dict[str, dict[str, Path]]) -> Iterator[Prediction]:
    """One Prediction per video, each with its timeline (timeline_prediction; waited on so that a network
    input does not keep a signal from stopping the run)."""
    for item in videos:
        yield waited_on(item.source, functools.partial(timeline_prediction, item, loaded, target, options, recipe,
                                                        over_time, targets))


@dataclass(frozen=True)
class _Job:
    """What predict_run, evaluate_run and embed_run share once their inputs are known: the
    videos, where the records go, and the callbacks."""

    videos: list[VideoInput]
    output: Path | None
    resume: bool
    place: Placement
    on_start: Callable[[int], None] | None
    on_result: Callable[[Any], None] | None
    extra: dict[str, dict[str, Any]] | None = None  # fields added to each video's record (evaluate: its label)

    @property
    def file(self) -> Path | None:
        """Where this process writes: --output, or under torchrun its rank file."""
        return rank_path(self.output, self.place.rank) if self.place.torchrun and self.output else self.output

    def pending(self, done: list[Record]) -> tuple[list[VideoInput], int]:
        """This process's videos (its shard) not in `done`, and how many of its shard were;
        on_start hears how many are left."""
        names = {record["video"] for record in done}
        mine = take_shard(self.videos, self.place.rank, self.place.world_size)
        todo = [v for v in mine if v.name not in names]
        if self.on_start is not None:
            self.on_start(len(todo))
        return todo, len(mine) - len(todo)


def _run(job: _Job, loaded: LoadedModel, target: torch.device, options: RunOptions,
         over_time: TimelineOptions | None = None) -> PredictRun:
    """Classify the job's videos not already in its output, streaming each record as it completes.
    An output whose records another run made (another model, top-k, recipe, windows) is refused."""
    done = done_records(job.output, job.place, job.resume)
    recipe, settings, cost = plan_run(loaded, options, target)
    windows = None if over_time is None else {"window_s": over_time.window_s, "hop_s": over_time.hop_s,
                                              "smooth": over_time.smooth}
    meaning = run_settings(loaded.card, model_sha256(loaded.card, loaded.weights, loaded.module), recipe,
                           options.top_k, windows)
    check_same_run(done, meaning, job.output)
    todo, resumed = job.pending(done)
    # a timeline runs the card's own frames (TimelineOptions has no --frames), so its IR is converted at those
    loaded = on_runtime(loaded, options.runtime, None if over_time is not None else recipe.spec.frames)
    run = PredictRun([], cost, len(job.videos), resumed, output=job.output, settings=meaning)
    if over_time is not None:
        targets = timeline_outputs(over_time, job.videos)
        stream = functools.partial(_timelines, todo, loaded, target, options, recipe, over_time, targets)
    else:
        stream = functools.partial(classify, todo, loaded, target, top_k=options.top_k, recipe=recipe,
                                   settings=settings)
    sink = job.file and functools.partial(_prediction_sink, run, job.file, options.top_k, job.resume, job.extra)
    peak = _collect(run.predictions, stream, target, sink, job.on_result)
    run.cost = dataclasses.replace(cost, peak_memory_mib=peak)
    return run


def _placed(shard: str | None, output: Path | None,
            device: str | torch.device | None) -> tuple[Placement, str | torch.device | None]:
    """This process's part of the inputs, and its device (under torchrun: its rank's, after joining the group)."""
    place = Placement.of(shard)
    if place.torchrun:
        from vidcls.devices import setup

        if output is None:
            raise UsageError("under torchrun, give --output FILE: "
                             "each process writes FILE.rankR and rank 0 merges them")
        device = setup("auto" if device is None else str(device)).device
    return place, device


@contextlib.contextmanager
def _gathered(videos: Iterable[str | Path]) -> Iterator[InputList]:
    """The inputs' videos (stdin spooled to a file while the run lasts); none at all is a UsageError:
    a command run on an empty folder should say so rather than print nothing."""
    with stdin_directory() as spool:
        inputs = gather(videos, spool)
        if not inputs.videos:
            raise UsageError("no video files found in the given paths"
                             + (f" ({inputs.skipped_note()})" if inputs.skipped else ""))
        yield inputs


def predict_run(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
                device: str | torch.device | None = None, output: str | Path | None = None,
                resume: bool = False, shard: str | None = None, timeline: TimelineOptions | None = None,
                on_result: Callable[[Prediction], None] | None = None,
                on_start: Callable[[int], None] | None = None, **options: Any) -> PredictRun:
    """predict() for a command: streaming to --output, resume, shards, torchrun, and the
    run's cost (GMACs per view, views per video, peak memory of classifying).

    output: a .jsonl/.json/.csv file written one record per video as each completes (every
    line flushed; Ctrl-C keeps the finished ones); resume skips the videos already in it. One
    process writes a file at a time (another is a UsageError naming it), each record carries
    `run` (what made it: predict.run_settings), and resuming a file whose run differs, or that is
    not vidcls records, is a UsageError naming why.
    shard "I/N" takes every N-th video from position I; under torchrun each rank takes its
    own and writes OUTPUT.rankR, and rank 0 merges them into OUTPUT in input order.
    options are RunOptions' fields (top_k, clips, crops, frames, stride, sampling, precision,
    batch_size, workers, threads, runtime, labels, prompt): a name that is not one is a TypeError.
    labels ("a,b,c", "@FILE" or a list) classify over any names with a model that reads label names
    (X-CLIP), each read as prompt ("a video of {}"); another model refuses them (UsageError). on_start(count) is
    called with the number of videos to classify, on_result(prediction) as each arrives.
    Inputs that hold no video at all are a UsageError: a command run on an empty folder should
    say so rather than print nothing. timeline (TimelineOptions) labels each video over time
    instead (vidcls.inference.timeline): each Prediction then carries its windows and segments,
    and its top_k is the mean over windows.
    """
    run_options = RunOptions(**options)
    if timeline is not None and timeline.plot is not None:
        require_matplotlib()  # before the run, not after it
    output = checked_output(output)
    place, device = _placed(shard, output, device)
    with writing(output, place):
        done_records(output, place, resume)  # refused before the model is loaded
        loaded, target = ready_model(model, weights, runtime_device(device, run_options.runtime))
        loaded = with_labels(loaded, run_options)
        # no more ranks than labels: --top-k 1000000000 would size every CSV row and merge by the flag
        run_options = dataclasses.replace(run_options, top_k=min(run_options.top_k, max(1, len(loaded.labels))))
        with _gathered(videos) as inputs:
            job = _Job(inputs.videos, output, resume, place, on_start, on_result)
            run = _run(job, loaded, target, run_options, timeline)
        run.skipped_note = inputs.skipped_note()
        if place.torchrun:
            order = [v.name for v in inputs.videos]
            run.merged = _finish_torchrun(place, lambda: merge(output, place.world_size, order, run_options.top_k))
    return run


def _finish_torchrun(place: Placement, merge_ranks: Callable[[], int]) -> int | None:
    """Wait for every rank (a barrier), then rank 0 merges the rank files into --output."""
    from vidcls.devices import Dist, teardown

    teardown(Dist(place.rank, place.world_size), finished=True)
    return merge_ranks() if place.rank == 0 else None


@dataclass
class EmbedRun:
    """A `vidcls embed` run: the Embeddings made by this call (without their vectors when they went
    to an output file, so memory stays flat at any scale), what a vector is (`meta`, also in every
    record), what the run cost, and what was not embedded (as PredictRun)."""

    embeddings: list[Embedding]
    meta: dict[str, Any]
    cost: RunCost
    total: int = 0  # videos in the inputs, all shards
    resumed: int = 0  # videos already in the output (not redone)
    skipped_note: str | None = None  # files in folders not taken as videos
    output: Path | None = None
    merged: int | None = None  # rank 0 under torchrun: records in the merged output

    def to_json(self) -> list[dict[str, Any]]:
        """The `embed --json` array: one record per video, in input order."""
        return [embedding.to_json(self.meta) for embedding in self.embeddings]


@contextlib.contextmanager
def _vector_sink(file: Path, meta: dict[str, Any], resume: bool) -> Iterator[Callable[[Embedding], None]]:
    with VectorWriter(file, meta["dim"], meta, resume=resume) as writer:
        yield writer.write


def embed_run(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
              device: str | torch.device | None = None, output: str | Path | None = None,
              resume: bool = False, shard: str | None = None,
              on_result: Callable[[Embedding], None] | None = None,
              on_start: Callable[[int], None] | None = None, **options: Any) -> EmbedRun:
    """Each video's vectors (`vidcls embed`): the model's pre-logits (vidcls.inference.embed) through
    predict_run's engine, with its streaming output, resume, shards and torchrun.

    options are EmbedOptions' fields (views "mean" or "all", normalize, timeline, window_s, hop_s)
    and RunOptions' but top_k (clips, crops, frames, stride, sampling, precision, batch_size,
    workers, threads); another name is a TypeError. output: .jsonl/.json (records with their
    `embedding`) or .npy (FILE.npy rows and FILE.index.jsonl records, vidcls.inference.vectors),
    flushed per video; resume continues it (a file written with other settings is a UsageError).
    A model without pre-logits (an exported .onnx) is a UsageError before any decoding.
    """
    how = EmbedOptions(**{f.name: options.pop(f.name) for f in dataclasses.fields(EmbedOptions) if f.name in options})
    if "top_k" in options:
        raise TypeError("embed_run() got an unexpected keyword argument 'top_k'")
    run_options = RunOptions(**options)
    if run_options.runtime != "torch":  # a converted graph gives logits only, as an exported .onnx does
        raise UsageError(f"embed runs on torch: the pre-logits are not an output of a {run_options.runtime} graph; "
                         f"drop --runtime {run_options.runtime}")
    output = checked_output(output, VECTOR_FORMATS)
    place, device = _placed(shard, output, device)
    with writing(output, place):
        done_records(output, place, resume, records_path)  # refused before the model is loaded
        loaded, target = ready_model(model, weights, device)
        recipe, settings, cost = plan_run(loaded, run_options, target)
        ref = loaded.name if isinstance(model, LoadedModel) else os.fspath(model)
        meta = embedding_meta(loaded, ref, recipe, how, settings.precision)
        with _gathered(videos) as inputs:
            job = _Job(inputs.videos, output, resume, place, on_start, on_result)
            done = done_records(output, place, resume, records_path)
            check_same_meta(done, meta, output)
            todo, resumed = job.pending(done)
            run = EmbedRun([], meta, cost, len(inputs.videos), resumed, inputs.skipped_note(), output)
            stream = functools.partial(embed_videos, todo, loaded, target, recipe, settings, how)
            sink = job.file and functools.partial(_vector_sink, job.file, meta, resume)
            keep = (lambda e: dataclasses.replace(e, vectors=None)) if output else (lambda e: e)
            peak = _collect(run.embeddings, stream, target, sink, on_result, keep)
        run.cost = dataclasses.replace(cost, peak_memory_mib=peak)
        if place.torchrun:
            order = [v.name for v in inputs.videos]
            run.merged = _finish_torchrun(place, lambda: merge_vectors(output, place.world_size, order))
        return run


def embed(videos: Iterable[str | Path], model: ModelRef, **options: Any) -> list[Embedding]:
    """The Embedding of each video, in input order: embed_run's arguments and its embeddings
    (`vidcls.embed(["a.mp4", "b.mp4"], "demo-motion")[0].vectors`)."""
    return embed_run(videos, model, **options).embeddings


def embed_text(texts: str | Sequence[str], model: ModelRef, *, weights: str | Path | None = None,
               device: str | torch.device | None = None, prompt: str | None = None,
               normalize: bool = False) -> tuple[list[TextEmbedding], dict[str, Any]]:
    """`vidcls embed --text`: each text's vector in the space of the model's video embeddings (X-CLIP),
    and what the vectors are (meta). texts: a list, "a,b,c" or "@FILE", as predict's labels."""
    loaded, _ = ready_model(model, weights, device)
    return embed_texts(loaded, parse_labels(texts), prompt, normalize)


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
    is a UsageError). A model that reads label names (X-CLIP) is evaluated zero-shot: its labels are
    the data's class names (or options' labels, which must include them), each read as options'
    prompt, and the summary says so. options are RunOptions' fields but top_k (always 5: top-5 is reported).
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
    output = checked_output(output)
    with writing(output, Placement()):
        done_records(output, Placement(), resume)  # refused before the model is loaded
        loaded, target = ready_model(model, weights, runtime_device(device, run_options.runtime))
        samples = read_samples(data)
        zero_shot = loaded.has_text
        if zero_shot and run_options.labels is None:
            names = list(dict.fromkeys(sorted(s.label for s in samples)))
            run_options = dataclasses.replace(run_options, labels=tuple(names))
        loaded = with_labels(loaded, run_options)
        mapping = match_labels([s.label for s in samples], loaded.labels, loaded.name)
        truth = {str(s.path): {"label": mapping[s.label]} for s in samples}
        items = [VideoInput(str(s.path), str(s.path)) for s in samples]
        run = _run(_Job(items, output, resume, Placement(), on_start, on_result, truth), loaded, target, run_options)
        if output is not None:
            records = [r for r in read_records(output) if r["video"] in truth]
        else:
            records = [{**p.to_json(), **truth[p.video]} for p in run.predictions]
        summary = summarize(records, loaded.name, loaded.labels)
        summary.zero_shot = zero_shot
        if plot is not None:
            plot_confusion(summary, Path(plot))
        return EvalRun(summary, run)


def distill(teacher: str, data: str | Path, output: str | Path, *, student: str = "ff-linear",
            val: str | Path | None = None, **options: Any) -> TrainResult:
    """`vidcls distill`: turn a pretrained quadratic model (joint or divided) into ff-linear on DATA's videos,
    no labels needed: weight transfer, attention transfer, then distillation on the teacher's soft labels.

    The student is `student`'s attention variant at the teacher's size; the agreement with the teacher is
    measured on `val`, or by default on a `holdout` share of DATA. options are DistillConfig's fields
    (attention_epochs, epochs, lr, temperature, label_weight, cache_teacher, precision, resume, ...).
    Returns the run's TrainResult (best_top1: the best agreement); `output` is the student's model directory.
    """
    from vidcls.train.config import DistillConfig
    from vidcls.train.distill import distill as run_distillation

    config = DistillConfig(model=student, train=Path(data), val=Path(data if val is None else val),
                           output=Path(output), teacher=teacher, **options)
    return run_distillation(config)


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
