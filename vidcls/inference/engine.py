"""The inference engine: many videos through one model as a pipeline, not a loop.

Worker processes (a torch DataLoader) decode each video and cut its views at the model's
size while the model process runs the forward passes; views of consecutive videos share
forward passes (`batch_size` counts views), and results come back in input order. Every
stage of one video (opening, decoding, resizing, views, its share of a forward pass,
softmax) is inside that video's failure boundary: it ends as an error on that video's
Prediction, never as an exception that costs the others.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vidcls.devices import autocast_context
from vidcls.errors import VidclsError, check_finite, first_line
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


def _init_worker(worker_id: int) -> None:
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


# GMACs per video below which a CPU run is decode-bound: decoding a clip costs 5-250 ms of a
# core, a model this small at most a few ms (demo-motion: 0.05 GMACs; ViT-B 8x224: 180 per view).
CHEAP_MODEL_GMACS = 1.0


def _cheap(device: torch.device, gmacs_per_video: float | None) -> bool:
    return device.type == "cpu" and gmacs_per_video is not None and gmacs_per_video < CHEAP_MODEL_GMACS


def default_workers(device: torch.device, gmacs_per_video: float | None = None) -> int:
    """Decoding processes when the user does not say. CUDA: all cores but two (the GPU waits
    on decoding). CPU with a cheap model: one per core (decoding is the work). CPU with a
    heavy or unknown model: a quarter of the cores, at least one (the model is the work; the
    decoder only has to keep ahead of it)."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(16, cores - 2))
    return cores if _cheap(device, gmacs_per_video) else max(1, cores // 4)


def default_threads(device: torch.device, gmacs_per_video: float | None = None) -> int:
    """Torch threads of the model process: one for a cheap CPU model (the cores decode), else
    one per core (torch's own default)."""
    return 1 if _cheap(device, gmacs_per_video) else (os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineSettings:
    """How a run uses the machine (predict's --batch-size, --workers, --threads, --precision)."""

    batch_size: int = 8  # views per forward pass
    workers: int | None = None  # decoding processes; None: default_workers; 0: in this process
    threads: int | None = None  # torch threads of the model process; None: default_threads
    precision: str = "fp32"
    prefetch: int = 2  # videos decoded ahead per worker
    gmacs_per_video: float | None = None  # the model's cost, to choose workers and threads


@dataclass
class _Pending:
    """A decoded video waiting for its views' share of forward passes."""

    decoded: Decoded
    rows: list[torch.Tensor] = field(default_factory=list)
    model_ms: float = 0.0


@dataclass
class Scored:
    """A video's outcome: mean softmax over its views (None when it failed)."""

    position: int
    probs: torch.Tensor | None
    frames_used: int
    error: str | None
    warnings: list[str]
    timing_ms: dict[str, float]


def _model_failure(exc: BaseException) -> str:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "model ran out of memory (try a smaller --batch-size)"
    return f"model failed ({type(exc).__name__}: {first_line(exc)})"


class _Batcher:
    """Packs consecutive videos' views into forward passes of batch_size views and hands
    videos back, in input order, once all their views are scored."""

    def __init__(self, model: LoadedModel, device: torch.device, settings: EngineSettings) -> None:
        self.model, self.device, self.settings = model, device, settings
        self.pending: deque[_Pending] = deque()
        self.queue: deque[tuple[_Pending, torch.Tensor]] = deque()  # views not yet run
        self.queued = 0

    def add(self, decoded: Decoded) -> Iterator[Scored]:
        entry = _Pending(decoded)
        self.pending.append(entry)
        if decoded.views is not None:
            self.queue.append((entry, decoded.views))
            self.queued += len(decoded.views)
            decoded.views = None
        while self.queued >= self.settings.batch_size:
            self._run(self.settings.batch_size)
        yield from self._ready()

    def flush(self) -> Iterator[Scored]:
        while self.queued:
            self._run(self.settings.batch_size)
        yield from self._ready()

    def _take(self, count: int) -> list[tuple[_Pending, torch.Tensor]]:
        """Up to `count` views from the front of the queue, as (owner, views) pieces."""
        pieces = []
        while count and self.queue:
            entry, views = self.queue.popleft()
            pieces.append((entry, views[:count]))
            if len(views) > count:
                self.queue.appendleft((entry, views[count:]))
            count -= len(pieces[-1][1])
        self.queued -= sum(len(v) for _, v in pieces)
        return pieces

    def _run(self, count: int) -> None:
        pieces = [(e, v) for e, v in self._take(count) if e.decoded.error is None]
        if not pieces:
            return
        try:
            self._forward(pieces)
        except Exception as exc:  # noqa: BLE001 - find the failing video by running each on its own
            if len(pieces) == 1:
                self._fail(pieces[0][0], _model_failure(exc))
                return
            for piece in pieces:
                try:
                    self._forward([piece])
                except Exception as exc:  # noqa: BLE001 - one video's failure is that video's error
                    self._fail(piece[0], _model_failure(exc))

    def _fail(self, entry: _Pending, reason: str) -> None:
        """Record a video's failure and drop its views still waiting for a forward pass."""
        entry.decoded.error = reason
        entry.rows.clear()
        kept = [(owner, views) for owner, views in self.queue if owner is not entry]
        self.queued = sum(len(views) for _, views in kept)
        self.queue = deque(kept)

    @torch.inference_mode()
    def _forward(self, pieces: list[tuple[_Pending, torch.Tensor]]) -> None:
        batch = torch.cat([v for _, v in pieces]) if len(pieces) > 1 else pieces[0][1]
        if self.device.type == "cuda" and not batch.is_pinned():  # views of several videos: cat unpinned them
            batch = batch.pin_memory()
        start = time.perf_counter()
        with autocast_context(self.device, self.settings.precision):
            logits = self.model.module(batch.to(self.device, non_blocking=True))
        probs = logits.float().softmax(dim=-1).cpu()
        elapsed = 1e3 * (time.perf_counter() - start)
        offset = 0
        for entry, views in pieces:
            rows = probs[offset:offset + len(views)]
            offset += len(views)
            entry.model_ms += elapsed * len(views) / len(batch)
            try:
                check_finite(rows, "model output")
            except VidclsError as exc:
                self._fail(entry, f"{exc}: check the weights")
                continue
            if entry.decoded.error is None:
                entry.rows.append(rows)

    def _ready(self) -> Iterator[Scored]:
        """The finished videos at the front: input order is kept, so a video waits for those before it."""
        while self.pending and not any(owner is self.pending[0] for owner, _ in self.queue):
            entry = self.pending.popleft()
            d = entry.decoded
            if d.error is None:
                probs = torch.cat(entry.rows).mean(dim=0)
                timing = {**d.timing_ms, "model": round(entry.model_ms, 2)}
            else:
                probs, timing = None, d.timing_ms
            yield Scored(d.position, probs, d.frames_used if probs is not None else 0, d.error, d.warnings, timing)


def score_videos(videos: Sequence[VideoInput], model: LoadedModel, device: torch.device, recipe: Recipe,
                 settings: EngineSettings = EngineSettings()) -> Iterator[Scored]:
    """Each video's mean softmax over its views, in input order, as soon as it is known.

    Decoding runs in settings.workers processes (see default_workers) ahead of the model;
    the model process runs with settings.threads torch threads (restored afterwards).
    Closing the iterator (Ctrl-C, a consumer that stops) shuts the workers down.
    """
    workers = default_workers(device, settings.gmacs_per_video) if settings.workers is None else settings.workers
    workers = min(workers, len(videos))
    threads = settings.threads or default_threads(device, settings.gmacs_per_video)
    loader = DataLoader(_VideoViews(videos, recipe), batch_size=None, num_workers=workers,
                        collate_fn=_keep, worker_init_fn=_init_worker if workers else None,
                        prefetch_factor=settings.prefetch if workers else None,
                        pin_memory=device.type == "cuda")
    batcher = _Batcher(model, device, settings)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    decoded_videos = iter(loader)
    try:
        for decoded in decoded_videos:
            yield from batcher.add(decoded)
        yield from batcher.flush()
    finally:
        torch.set_num_threads(previous)
        # stop the workers now (Ctrl-C, a consumer that stopped), not whenever the iterator is
        # collected: during interpreter exit that can meet half-torn-down multiprocessing state
        stop = getattr(decoded_videos, "_shutdown_workers", None)
        if stop is not None:
            stop()
