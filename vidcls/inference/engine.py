"""The inference engine: many videos through one model as a pipeline, not a loop.

Worker processes (a torch DataLoader) decode each video and cut its views at the model's
size while the model process runs the forward passes; views of consecutive videos share
forward passes (`batch_size` counts views), and results come back in input order. Every
stage of one video (opening, decoding, resizing, views, its share of a forward pass,
softmax or pre-logits) is inside that video's failure boundary: it ends as an error on that video's
Prediction, never as an exception that costs the others.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vidcls.errors import VidclsError, first_line
from vidcls.inference.batcher import MEAN_SOFTMAX, Batcher, Head, Scores
from vidcls.inference.planning import EnginePlan, model_core_seconds, plan_engine
from vidcls.video import container as video_io
from vidcls.video.container import DecodeStats
from vidcls.video.decode import load_clips
from vidcls.video.inputs import VideoInput
from vidcls.video.transforms import crop_views, fitted_frame
from vidcls.zoo.modeldir import InputSpec
from vidcls.zoo.resolve import LoadedModel


@dataclass(frozen=True)
class Recipe:
    """How each video becomes views: the model's InputSpec with the run's overrides."""

    spec: InputSpec
    clips: int
    crops: int

    @classmethod
    def of(cls, spec: InputSpec, *, frames: int | None = None, stride: int | None = None,
           sampling: str | None = None, clips: int | None = None, crops: int | None = None) -> Recipe:
        changes = {k: v for k, v in (("frames", frames), ("stride", stride), ("sampling", sampling))
                   if v is not None}
        spec = InputSpec(**{**spec.to_dict(), **changes}) if changes else spec
        return cls(spec, clips or spec.clips, crops or spec.crops)

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass
class Decoded:
    """One video after the decoding stage: its views, or why there are none."""

    position: int
    views: torch.Tensor | None = None
    frames_used: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)

    def pin_memory(self) -> Decoded:
        """Called by the DataLoader's pinning thread on CUDA runs: page-locked views copy to
        the GPU without blocking the model process."""
        if self.views is not None:
            self.views = self.views.pin_memory()
        return self


def decode_views(position: int, item: VideoInput, recipe: Recipe) -> Decoded:
    """Decode one video and cut its normalised views; every failure becomes the result's error."""
    result = Decoded(position)
    if item.error:
        result.error = item.error
        return result
    spec = recipe.spec
    stats = DecodeStats()
    start = time.perf_counter()
    try:
        clips, _ = load_clips(item.source, frames=spec.frames, stride=spec.stride, clips=recipe.clips,
                              sampling=spec.sampling, stats=stats,
                              frame_fn=lambda f: fitted_frame(f, spec.resize or spec.size, spec.aspect))
        t_decode = time.perf_counter()
        result.views = crop_views(clips.transpose(1, 2), spec.size, recipe.crops, spec.mean, spec.std)
    except VidclsError as exc:
        result.error = str(exc)
    except MemoryError:
        result.error = "out of memory while decoding (frames too large for this machine?)"
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not lose the others
        result.error = f"could not decode ({type(exc).__name__}: {first_line(exc)})"
    else:
        result.frames_used = recipe.clips * spec.frames
        result.timing_ms = {"decode": round(1e3 * (t_decode - start), 2),
                            "preprocess": round(1e3 * (time.perf_counter() - t_decode), 2)}
    result.warnings = stats.warnings()
    return result


class _VideoViews(Dataset):
    """The videos of a run as a map-style dataset whose items are Decoded (never an exception)."""

    def __init__(self, videos: Sequence[VideoInput], recipe: Recipe) -> None:
        self.videos, self.recipe = videos, recipe

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, position: int) -> Decoded:
        return decode_views(position, self.videos[position], self.recipe)


def _quiet_broken_connections(kind: type[BaseException], value: BaseException, trace: Any) -> None:
    """A worker's tensor-sharing thread (multiprocessing.resource_sharer, which reports through
    sys.excepthook) loses its connection when the main process stops reading on Ctrl-C: that
    is the run ending, not an error to print a traceback for."""
    if not issubclass(kind, (ConnectionError, EOFError)):
        sys.__excepthook__(kind, value, trace)


def init_worker(worker_id: int) -> None:
    """One torch and one decoder thread per worker, so N workers use N cores, not N x cores
    threads fighting over them; Ctrl-C is left to the main process, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The CLI's SIGTERM handler (stop like Ctrl-C) is inherited through fork; in a worker it would
    # turn the main process's exit-time terminate() into a KeyboardInterrupt, after which the
    # worker waits to flush its queue to a reader that is gone, and the main process joins it forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.excepthook = _quiet_broken_connections
    torch.set_num_threads(1)
    video_io.set_decoder_threads(1)


def _keep(item: Decoded) -> Decoded:
    return item


# A default worker is started only for this many videos or more: starting one (a fork, a DataLoader
# handshake: 0.1-0.2 s) costs more than decoding a clip or two in this process.
VIDEOS_PER_WORKER = 2


def _fp32_plan(device: torch.device, gmacs_per_video: float | None) -> EnginePlan:
    return plan_engine(os.cpu_count() or 1, device.type, model_core_seconds(gmacs_per_video, "fp32"))


def default_workers(device: torch.device, gmacs_per_video: float | None = None) -> int:
    """Decoding processes when the user does not say, for a torch fp32 model of that cost (training's
    choice); a predict run plans from its own precision and runtime (EngineSettings.plan). See
    planning.plan_engine: CUDA all cores but two; CPU as many as keep decoding ahead of the model."""
    return _fp32_plan(device, gmacs_per_video).workers


def default_threads(device: torch.device, gmacs_per_video: float | None = None) -> int:
    """Torch threads of the model process: the cores decoding does not need (planning.plan_engine)."""
    return _fp32_plan(device, gmacs_per_video).threads


@dataclass(frozen=True)
class EngineSettings:
    """How a run uses the machine (predict's --batch-size, --workers, --threads, --precision)."""

    batch_size: int = 8  # views per forward pass
    workers: int | None = None  # decoding processes; None: default_workers; 0: in this process
    threads: int | None = None  # torch threads of the model process; None: default_threads
    precision: str = "fp32"  # a concrete one (plan_run chooses for "auto")
    prefetch: int = 2  # videos decoded ahead per worker
    gmacs_per_video: float | None = None  # the model's cost, to choose workers and threads (as fp32)
    plan: EnginePlan | None = None  # default workers and threads from the run's rates (plan_run); else from the cost


@dataclass
class Scored:
    """A video's outcome: its Head's value over its views (predict: the mean softmax; None when it failed)."""

    position: int
    value: torch.Tensor | None
    frames_used: int
    error: str | None
    warnings: list[str]
    timing_ms: dict[str, float]


def scored_of(done: Scores) -> Scored:
    """A video's Scored from the batcher's outcome for its Decoded (the owner it was added as)."""
    decoded: Decoded = done.owner
    timing = decoded.timing_ms if done.value is None else {**decoded.timing_ms, "model": round(done.model_ms, 2)}
    frames_used = decoded.frames_used if done.value is not None else 0
    return Scored(decoded.position, done.value, frames_used, done.error, decoded.warnings, timing)


def _add(batcher: Batcher, decoded: Decoded) -> Iterator[Scored]:
    """Queue a decoded video's views; its tensor is released here, the batcher holds the views."""
    views, decoded.views = decoded.views, None
    for done in batcher.add(decoded, views, decoded.error):
        yield scored_of(done)


def score_videos(videos: Sequence[VideoInput], model: LoadedModel, device: torch.device, recipe: Recipe,
                 settings: EngineSettings = EngineSettings(), head: Head = MEAN_SOFTMAX) -> Iterator[Scored]:
    """Each video's value over its views (`head`: the mean softmax by default), in input order,
    as soon as it is known.

    Decoding runs in settings.workers processes (see default_workers) ahead of the model;
    the model process runs with settings.threads torch threads (restored afterwards).
    Closing the iterator (Ctrl-C, a consumer that stops) shuts the workers down.
    """
    plan = settings.plan or _fp32_plan(device, settings.gmacs_per_video)
    if settings.workers is None:  # a worker pays for its start only with videos to decode ahead of the model
        workers = min(plan.workers, len(videos) // VIDEOS_PER_WORKER)
    else:
        workers = min(settings.workers, len(videos))
    threads = settings.threads or plan.threads
    loader = DataLoader(_VideoViews(videos, recipe), batch_size=None, num_workers=workers,
                        collate_fn=_keep, worker_init_fn=init_worker if workers else None,
                        prefetch_factor=settings.prefetch if workers else None,
                        pin_memory=device.type == "cuda")
    batcher = Batcher(model.at_precision(settings.precision), device, settings.precision, settings.batch_size, head)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    decoded_videos = iter(loader)
    try:
        for decoded in decoded_videos:
            yield from _add(batcher, decoded)
        yield from map(scored_of, batcher.flush())
    finally:
        torch.set_num_threads(previous)
        # stop the workers now (Ctrl-C, a consumer that stopped), not whenever the iterator is
        # collected: during interpreter exit that can meet half-torn-down multiprocessing state
        stop = getattr(decoded_videos, "_shutdown_workers", None)
        if stop is not None:
            stop()
