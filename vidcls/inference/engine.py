"""The inference engine: many videos through one model as a pipeline, not a loop.

Worker processes (a torch DataLoader) decode each video and cut its views at the model's
size while the model process runs the forward passes; views of consecutive videos share
forward passes (`batch_size` counts views), and results come back in input order. Every
stage of one video (opening, decoding, resizing, views, its share of a forward pass,
softmax or pre-logits) is inside that video's failure boundary: it ends as an error on that video's
Prediction, never as an exception that costs the others. So is the death of a decoding process (the
kernel's OOM killer sends SIGKILL; a decoder can segfault): the video it held fails, the workers are
started again, and every other video is still decoded (_decoded). A network input is never waited on
with results ahead of it held back, and decoded in this process (--workers 0) it does not keep SIGTERM or
Ctrl-C from stopping the run (waited_on).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from vidcls.errors import VidclsError, first_line
from vidcls.inference.batcher import MEAN_SOFTMAX, Batcher, Head, Scores
from vidcls.inference.planning import EnginePlan, model_core_seconds, plan_engine
from vidcls.video import container as video_io
from vidcls.video.container import DecodeStats
from vidcls.video.decode import load_clips
from vidcls.video.inputs import VideoInput, is_url
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


# How often the main thread looks up from waiting on a network input handled in this process: the
# longest a signal's handler (SIGTERM, Ctrl-C) waits to run.
SIGNAL_CHECK_S = 0.1
T = TypeVar("T")


def waited_on(source: str, work: Callable[[], T]) -> T:
    """work() on one video: here, or for a network `source` in a daemon thread that this thread waits
    on in SIGNAL_CHECK_S slices (its result or exception comes back here).

    Python runs a signal's handler only when the main thread is back in bytecode, and ffmpeg reading
    from a server that sends a byte every few seconds stays in C (av_read_frame) for up to the 30 s read
    timeout per read: PyAV's interrupt callback (its timeout) checks the clock, not signals. Waiting in
    slices, SIGTERM and Ctrl-C stop the run at once; the thread left behind ends at its read timeout or
    deadline (video.container), and, a daemon, never holds up the interpreter's exit."""
    if not is_url(source):
        return work()
    value: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            value.append(work())
        except BaseException as exc:  # noqa: BLE001 - raised again in the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="vidcls-network-input", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(SIGNAL_CHECK_S)
    if failure:
        raise failure[0]
    return value[0]


class _VideoViews(Dataset):
    """The videos of a run as a map-style dataset whose items are Decoded (never an exception).

    holding: shared memory, one slot per worker, where a worker writes the position of the video it
    is decoding (-1 between videos), so that when it dies the video that killed it is known. failed:
    positions whose decoder died, returned as their error without being decoded again."""

    def __init__(self, videos: Sequence[VideoInput], recipe: Recipe, holding: Any = None,
                 failed: dict[int, str] | None = None) -> None:
        self.videos, self.recipe, self.holding, self.failed = videos, recipe, holding, failed or {}

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, position: int) -> Decoded:
        if position in self.failed:
            return Decoded(position, error=self.failed[position])
        item, worker = self.videos[position], get_worker_info()
        if self.holding is None or worker is None:  # in this process, where a network input must not hold off a signal
            return waited_on(item.source, partial(decode_views, position, item, self.recipe))
        self.holding[worker.id] = position
        try:
            return decode_views(position, item, self.recipe)
        finally:
            self.holding[worker.id] = -1


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
    # torch's handlers print "ERROR: Unexpected segmentation fault encountered in worker." before the worker
    # dies; the main process reports the crash as the error of the video it held (_decoded), in one line
    for crash in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE):
        signal.signal(crash, signal.SIG_DFL)
    torch.set_num_threads(1)
    video_io.set_decoder_threads(1)


def _keep(item: Decoded) -> Decoded:
    return item


CRASHES = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)


def death_reason(exitcode: int | None) -> str:
    """Why a decoding process died, from its exit code (negative: the signal that ended it), as the
    error of the video it was decoding."""
    if exitcode is None or exitcode >= 0:
        return f"the decoding process exited (code {exitcode}) while decoding this video"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == signal.SIGKILL:
        return "the decoding process was killed (SIGKILL, as the kernel's OOM killer sends) while decoding this video"
    if -exitcode in CRASHES:
        return f"the decoder crashed ({name}) while decoding this video"
    return f"the decoding process was killed ({name}) while decoding this video"


def _unwatched(iterator: Any) -> None:
    """Stop torch's SIGCHLD handler from raising for these workers: it raises in the main thread
    wherever it happens to be (inside the model, or a writer between two records), where nothing can
    contain it. A dead worker is then found where _decoded waits for its data (within
    torch's MP_STATUS_CHECK_INTERVAL, 5 s) and handled there."""
    if getattr(iterator, "_worker_pids_set", False):
        try:
            from torch.utils.data._utils import signal_handling

            signal_handling._remove_worker_pids(id(iterator))
            iterator._worker_pids_set = False
        except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - another torch: keep its handler
            pass


def _dead_workers(iterator: Any, wait_s: float = 2.0) -> list[tuple[int, int | None]]:
    """(worker id, exit code) of the iterator's workers that have died; a worker whose connection broke
    is given `wait_s` to be seen dead (the kernel closes its sockets before its exit is reported)."""
    workers = getattr(iterator, "_workers", None) or []
    deadline = time.monotonic() + wait_s
    while True:
        dead = [(number, w.exitcode) for number, w in enumerate(workers) if not w.is_alive()]
        if dead or time.monotonic() > deadline:
            return dead
        time.sleep(0.05)


def _end_workers(iterator: Any) -> None:
    """End a loader's workers at once when the run stops early.

    torch's shutdown asks each worker to exit and joins it for up to 5 s (MP_STATUS_CHECK_INTERVAL)
    before terminating it, one worker after the other: a worker stuck in ffmpeg on a server that drips
    cost 5 s each (16 s for three). With nothing left to receive, SIGTERM (SIG_DFL in a worker:
    init_worker) ends them together. Not when memory is pinned: torch's pinning thread still reads
    the workers' queue until its shutdown stops it, and a worker killed halfway through a message
    could leave that thread waiting for the rest."""
    for worker in getattr(iterator, "_workers", None) or []:
        if worker.is_alive():
            worker.terminate()


def _decoded(videos: Sequence[VideoInput], recipe: Recipe, workers: int, prefetch: int,
             pin: bool) -> Iterator[Decoded]:
    """Each video's Decoded, in input order, from `workers` processes (a torch DataLoader; 0: here).

    A worker that dies (SIGKILL from the OOM killer, a segfault in a decoder) would end the
    DataLoader, and with it the run: instead the video it held becomes that video's error and a new
    DataLoader (fresh workers) goes on from the first video not yet received; videos the dead
    loader had decoded but not handed over are decoded again. Each restart either receives a video
    or fails one, so a run ends after at most one restart per video.
    """
    pending = list(range(len(videos)))
    failed: dict[int, str] = {}
    restart = False
    while pending:
        holding = multiprocessing.RawArray("q", [-1] * workers) if workers else None
        with warnings.catch_warnings():
            if restart:  # torch's notes on the worker count were shown at the start
                warnings.simplefilter("ignore")
            loader = DataLoader(_VideoViews(videos, recipe, holding, dict(failed)), batch_size=None,
                                sampler=pending, num_workers=workers, collate_fn=_keep,
                                worker_init_fn=init_worker if workers else None,
                                prefetch_factor=prefetch if workers else None, pin_memory=pin)
            iterator = iter(loader)
        _unwatched(iterator)
        received = 0
        try:
            while received < len(pending):
                try:
                    decoded = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    dead = _dead_workers(iterator) if workers else []
                    if not dead:
                        raise
                    held = [(holding[number], code) for number, code in dead if holding[number] >= 0]
                    for position, code in held or [(pending[received], dead[0][1])] * (received == 0):
                        failed[position] = death_reason(code)
                    break
                received += 1
                yield decoded
        except BaseException:  # a stop (Ctrl-C, SIGTERM, the consumer closed) or an error: no more videos wanted
            if workers and not pin:
                _end_workers(iterator)
            raise
        finally:
            stop = getattr(iterator, "_shutdown_workers", None)
            if stop is not None:
                stop()
        pending, restart = pending[received:] if received < len(pending) else [], True


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
    batcher = Batcher(model.at_precision(settings.precision), device, settings.precision, settings.batch_size, head)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    decoded_videos = _decoded(videos, recipe, workers, settings.prefetch, pin=device.type == "cuda")
    try:
        for decoded in decoded_videos:
            yield from _add(batcher, decoded)
            if decoded.position + 1 < len(videos) and is_url(videos[decoded.position + 1].source):
                # a server can stall the next video for minutes: the videos before it are not held back
                yield from map(scored_of, batcher.flush())
        yield from map(scored_of, batcher.flush())
    finally:
        torch.set_num_threads(previous)
        # stop the workers now (Ctrl-C, a consumer that stopped), not whenever the iterator is
        # collected: during interpreter exit that can meet half-torn-down multiprocessing state
        decoded_videos.close()
