"""Pack the views of many owners (videos, or one video's windows) into forward passes.

The one batcher behind predict, evaluate, the timeline and embed, so every one of them has the
same failure boundary: a forward pass that raises is re-run owner by owner to find the culprit,
and an owner whose outputs are not finite (overflowing logits) fails alone with a one-line
reason. An owner is handed back, in the order owners were added, once all its views are done:
its Head's reduction of them (predict's mean softmax, embed's pre-logits), or its error.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from vidcls.devices import PRECISIONS, autocast_context
from vidcls.errors import VidclsError, check_finite, first_line
from vidcls.models.base import VideoClassifier


@dataclass(frozen=True)
class Head:
    """What the batcher computes per view and how it reduces an owner's views to its value.

    per_view(module, batch) -> (B, D) rows, run under the run's autocast; reduce turns an owner's
    (views, D) float32 rows into its value. Predict is MEAN_SOFTMAX; embed reads the model's
    pre-logits instead (vidcls.inference.embed), through the same batches and failure boundary.
    """

    per_view: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]
    reduce: Callable[[torch.Tensor], torch.Tensor]


def softmax_rows(module: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    return module(batch).float().softmax(dim=-1)


def mean_rows(rows: torch.Tensor) -> torch.Tensor:
    return rows.mean(dim=0)


MEAN_SOFTMAX = Head(softmax_rows, mean_rows)


@dataclass
class Scores:
    """One owner's outcome: its Head's value over its views (predict: the mean softmax), or why there is none."""

    owner: Any
    value: torch.Tensor | None
    error: str | None
    model_ms: float  # its share of the forward passes' time


@dataclass
class _Entry:
    owner: Any
    error: str | None
    rows: list[torch.Tensor] = field(default_factory=list)
    model_ms: float = 0.0


def model_failure(exc: BaseException) -> str:
    """The one-line reason a forward pass failed."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "model ran out of memory (try a smaller --batch-size)"
    if isinstance(exc, VidclsError):  # a runtime's own one-line reason (a graph stopped after its time limit)
        return f"model failed: {first_line(exc)}"
    return f"model failed ({type(exc).__name__}: {first_line(exc)})"


class Batcher:
    """Forward passes of `batch_size` views taken from the front of a queue of owners' views."""

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], device: torch.device, precision: str,
                 batch_size: int, head: Head = MEAN_SOFTMAX) -> None:
        """module: already at `precision` (LoadedModel.at_precision); views are cast to its dtype."""
        self.module, self.device, self.batch_size = module, device, batch_size
        # a vidcls torch model comes cast once (LoadedModel.at_precision): its views are cast to match; a
        # runtime module (ONNX Runtime, OpenVINO) takes float32 views and reads the precision from autocast
        torch_model = isinstance(module, VideoClassifier)
        self.dtype = PRECISIONS[precision] if torch_model else torch.float32
        self.autocast = "fp32" if torch_model else precision
        self.head = head
        self.pending: deque[_Entry] = deque()  # every owner not yet handed back, in order
        self.queue: deque[tuple[_Entry, torch.Tensor]] = deque()  # views not yet run
        self.queued = 0

    def add(self, owner: Any, views: torch.Tensor | None, error: str | None = None) -> Iterator[Scores]:
        """Queue an owner's views (or record that it failed before the model: `error`); runs the
        full batches this completes and yields the owners now finished."""
        entry = _Entry(owner, error)
        self.pending.append(entry)
        if error is None and views is not None:
            self.queue.append((entry, views))
            self.queued += len(views)
        while self.queued >= self.batch_size:
            self._run(self.batch_size)
        yield from self._ready()

    def flush(self) -> Iterator[Scores]:
        """Run what is left and yield every remaining owner."""
        while self.queued:
            self._run(self.batch_size)
        yield from self._ready()

    def _take(self, count: int) -> list[tuple[_Entry, torch.Tensor]]:
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
        pieces = [(e, v) for e, v in self._take(count) if e.error is None]
        if not pieces:
            return
        try:
            self._forward(pieces)
        except Exception as exc:  # noqa: BLE001 - find the failing owner by running each on its own
            if len(pieces) == 1:
                self._fail(pieces[0][0], model_failure(exc))
                return
            for piece in pieces:
                try:
                    self._forward([piece])
                except Exception as exc:  # noqa: BLE001 - one owner's failure is that owner's error
                    self._fail(piece[0], model_failure(exc))

    def _fail(self, entry: _Entry, reason: str) -> None:
        """Record an owner's failure and drop its views still waiting for a forward pass."""
        entry.error = reason
        entry.rows.clear()
        kept = [(owner, views) for owner, views in self.queue if owner is not entry]
        self.queued = sum(len(views) for _, views in kept)
        self.queue = deque(kept)

    @torch.inference_mode()
    def _forward(self, pieces: list[tuple[_Entry, torch.Tensor]]) -> None:
        batch = torch.cat([v for _, v in pieces]) if len(pieces) > 1 else pieces[0][1]
        if self.device.type == "cuda" and not batch.is_pinned():  # views of several owners: cat unpinned them
            batch = batch.pin_memory()
        start = time.perf_counter()
        with autocast_context(self.device, self.autocast):
            outputs = self.head.per_view(self.module, batch.to(self.device, self.dtype, non_blocking=True))
        outputs = outputs.float().cpu()
        elapsed = 1e3 * (time.perf_counter() - start)
        offset = 0
        for entry, views in pieces:
            rows = outputs[offset:offset + len(views)]
            offset += len(views)
            entry.model_ms += elapsed * len(views) / len(batch)
            try:
                check_finite(rows, "model output")
            except VidclsError as exc:
                self._fail(entry, f"{exc}: check the weights")
                continue
            if entry.error is None:
                entry.rows.append(rows)

    def _ready(self) -> Iterator[Scores]:
        """The finished owners at the front: order is kept, so an owner waits for those before it."""
        while self.pending and not any(owner is self.pending[0] for owner, _ in self.queue):
            entry = self.pending.popleft()
            value = self.head.reduce(torch.cat(entry.rows)) if entry.error is None else None
            yield Scores(entry.owner, value, entry.error, entry.model_ms)
