"""The engine every request shares: decoding processes ahead of one model thread that batches views.

A request's video is decoded in a worker process (vidcls.inference.engine.decode_views, the step
`vidcls predict`'s DataLoader workers run), and its views go to the model thread's inbox. That
thread owns the model: it takes views from the inbox into the predict pipeline's Batcher (one per
Head: predict's mean softmax, each kind of embedding), runs a forward pass as soon as a batch is
full, and otherwise waits up to --max-wait-ms for more views before running what it has
(dynamic batching), so concurrent requests share forward passes as consecutive videos of one
predict run do. The Batcher's failure boundary holds per request: a forward pass that raises is
re-run owner by owner, and only the culprit's request fails.

A timeline (or an embedding over time) is one pass over the file that decodes window after window
(vidcls.inference.timeline); it runs in a thread of the server with a RemoteBatcher that sends each
window's views to the same model thread, so its windows are batched with other requests' views.

Worker processes come from a forkserver that imported torch and the decoder once (a new worker is
a fork of it: milliseconds), not a fork of this multi-threaded server. They ignore SIGINT and
SIGTERM (the server decides when they stop: after draining) and exit by themselves when the server
is gone (a watchdog checks every second), and the forkserver with them. A worker that crashes (a
decoder bug killed it) breaks the pool: a new one is started and the videos it held are decoded
once more; one that breaks it again fails alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import torch

from vidcls.errors import VidclsError
from vidcls.inference.batcher import MEAN_SOFTMAX, Batcher, Head, Scores
from vidcls.inference.embed import embedding_head
from vidcls.inference.engine import Decoded, Recipe, decode_views, init_worker
from vidcls.inference.options import EmbedOptions
from vidcls.video.container import restrict_to_self_contained_files
from vidcls.video.inputs import VideoInput

SOCKET_DIR_MAX = 60  # longest $TMPDIR the forkserver's socket is made under (pymp-*/listener-* adds ~32)
WATCHDOG_S = 1.0  # how often a decoding worker checks that the server is alive
PREDICT = ("predict",)  # the Head key of predict's mean softmax; embeddings: ("embed", views, normalize)


def predict_key(labels: tuple[str, ...] | None) -> tuple:
    """The batch key of predict's views: one per label set, since a text model (X-CLIP) scores a batch
    against one set; the model thread sets it before each batch (ModelLoop's `relabel`)."""
    return PREDICT if labels is None else (*PREDICT, labels)


class Cancelled(VidclsError):
    """The request's client went away or its time ran out: its remaining work is dropped."""


@dataclass
class Ticket:
    """A request's stake in the engine: set cancelled when it times out or its client disconnects,
    so that views not yet in a batch and windows not yet decoded are skipped."""

    cancelled: bool = False


def head_for(key: tuple) -> Head:
    if key[0] == PREDICT[0]:
        return MEAN_SOFTMAX
    return embedding_head(EmbedOptions(views=key[1], normalize=key[2]))


@dataclass
class _Work:
    views: torch.Tensor
    key: tuple
    ticket: Ticket
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


def _settle(future: concurrent.futures.Future, value: Any = None, error: BaseException | None = None) -> None:
    """Set a future's outcome unless its waiter gave up (a cancelled future refuses one)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class ModelLoop:
    """One thread that runs every forward pass: views from many requests, batched (module docstring)."""

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], device: torch.device, precision: str,
                 batch_size: int, max_wait_s: float, threads: int,
                 on_batch: Callable[[int, float], None] = lambda views, seconds: None,
                 relabel: Callable[[tuple[str, ...] | None], None] | None = None) -> None:
        self.module, self.device, self.precision = module, device, precision
        self.relabel = relabel  # a text model: make a predict key's label set (None: its own) the classes
        self.batch_size, self.max_wait_s, self.threads = batch_size, max_wait_s, threads
        self.on_batch = on_batch
        self.inbox: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self.batchers: dict[tuple, Batcher] = {}
        self.thread = threading.Thread(target=self._run, name="vidcls-model", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join()

    def submit(self, views: torch.Tensor, key: tuple, ticket: Ticket) -> concurrent.futures.Future:
        """Queue views for the model; the future gets the batcher's Scores (value or error, model_ms)."""
        work = _Work(views, key, ticket)
        self.inbox.put(work)
        return work.future

    def _batcher(self, key: tuple) -> Batcher:
        if key not in self.batchers:
            head = head_for(key)
            relabel = self.relabel if key[0] == PREDICT[0] else None
            labels = key[1] if len(key) > 1 else None

            def per_view(module: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
                if relabel is not None:
                    relabel(labels)  # this thread runs every batch, so the classes are this batch's
                start = time.perf_counter()
                rows = head.per_view(module, batch)
                self.on_batch(len(batch), time.perf_counter() - start)
                return rows

            self.batchers[key] = Batcher(self.module, self.device, self.precision, self.batch_size,
                                         Head(per_view, head.reduce))
        return self.batchers[key]

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        stop = False
        while not stop:
            work = self.inbox.get()
            if work is None:
                break
            try:
                stop = self._gather(work)
                for batcher in self.batchers.values():
                    self._deliver(batcher.flush())
            except Exception as exc:  # noqa: BLE001 - the batcher's own boundary failed: fail what it held
                for batcher in self.batchers.values():
                    for entry in batcher.pending:
                        _settle(entry.owner.future, error=exc)
                self.batchers.clear()

    def _gather(self, first: _Work) -> bool:
        """Add `first`, then more views until the batches are full or max_wait_s has passed; True on stop."""
        self._add(first)
        deadline = time.monotonic() + self.max_wait_s
        while any(b.queued for b in self.batchers.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                work = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if work is None:
                return True
            self._add(work)
        return False

    def _add(self, work: _Work) -> None:
        if work.ticket.cancelled or work.future.cancelled():
            _settle(work.future, error=Cancelled("request cancelled"))
            return
        self._deliver(self._batcher(work.key).add(work, work.views))

    @staticmethod
    def _deliver(finished: Iterator[Scores]) -> None:
        for done in finished:
            _settle(done.owner.future, done)


class RemoteBatcher:
    """Batcher's add/flush for window_pass, sending each window's views to the shared ModelLoop; at
    most ~2 batches of views are out at once (memory stays that of one window plus the batches)."""

    def __init__(self, loop: ModelLoop, key: tuple, ticket: Ticket) -> None:
        self.loop, self.key, self.ticket = loop, key, ticket
        self.waiting: deque[tuple[Any, concurrent.futures.Future | None, str | None, int]] = deque()
        self.outstanding = 0

    def add(self, owner: Any, views: torch.Tensor | None, error: str | None = None) -> Iterator[Scores]:
        if self.ticket.cancelled:
            raise Cancelled("request cancelled")
        if error is None and views is not None:
            self.waiting.append((owner, self.loop.submit(views, self.key, self.ticket), None, len(views)))
            self.outstanding += len(views)
        else:
            self.waiting.append((owner, None, error, 0))
        ready = []
        while self.outstanding > 2 * self.loop.batch_size:
            ready.append(self._next())
        return iter(ready)

    def flush(self) -> Iterator[Scores]:
        while self.waiting:
            yield self._next()

    def _next(self) -> Scores:
        owner, future, error, count = self.waiting.popleft()
        self.outstanding -= count
        if future is None:
            return Scores(owner, None, error, 0.0)
        done: Scores = future.result()
        return Scores(owner, done.value, done.error, done.model_ms)


def _chain(done: concurrent.futures.Future, outcome: concurrent.futures.Future, decoded: Decoded) -> None:
    error = done.exception() if not done.cancelled() else Cancelled("request cancelled")
    _settle(outcome, (decoded, done.result()) if error is None else None, error)


def _init_decoder(server_pid: int) -> None:
    """A decoding worker: engine.init_worker's one thread each, uploads opened as self-contained files only
    (no playlist that names other paths or URLs), signals left to the server, and a
    watchdog that ends it when the server is gone (killed without draining: a worker would otherwise
    wait on its queue forever, and keep the forkserver alive with it)."""
    init_worker(0)
    restrict_to_self_contained_files()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(server_pid,), name="vidcls-watchdog", daemon=True).start()


def _watch(server_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_S)
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # pragma: no cover - alive, under another user (pid reuse)
            pass


def start_forkserver() -> None:
    """Start the forkserver now, importing torch and the decoder in the background: the workers fork
    from it, and it loads while the server loads the model."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    from multiprocessing import forkserver, util

    # The forkserver listens on a Unix socket in a pymp-* folder under $TMPDIR, and a socket's path is
    # at most 107 bytes: under a long $TMPDIR (a test's tmp_path) that folder is made in /tmp instead.
    if len(tempfile.gettempdir()) > SOCKET_DIR_MAX and os.path.isdir("/tmp"):
        saved, tempfile.tempdir = tempfile.tempdir, "/tmp"
        try:
            util.get_temp_dir()  # made now, and kept for this process
        finally:
            tempfile.tempdir = saved
    forkserver.ensure_running()


def _ready() -> bool:
    return True


def _decode(item: VideoInput, recipe: Recipe) -> Decoded:
    """decode_views in a worker, its views handed back as a numpy array: pickled bytes through the pool's
    pipe (about 1 ms for a small clip) where torch's shared-memory handoff opens a connection per tensor
    (10-20 ms on a busy machine)."""
    decoded = decode_views(0, item, recipe)
    if decoded.views is not None:
        decoded.views = decoded.views.numpy()
    return decoded


class DecodePool:
    """Decoding processes (workers 0: a thread of the server, for tests and tiny deployments)."""

    def __init__(self, workers: int, recipe: Recipe) -> None:
        self.workers, self.recipe = workers, recipe
        self.lock = threading.Lock()
        self.pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.Executor:
        if self.workers == 0:
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vidcls-decode")
        start_forkserver()
        context = multiprocessing.get_context("forkserver")
        return concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_decoder,
                                                      initargs=(os.getpid(),))

    def start(self) -> None:
        """Start every worker now (the first requests should not wait for them)."""
        for future in [self.pool.submit(_ready) for _ in range(max(1, self.workers))]:
            future.result()

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def decode_then(self, item: VideoInput,
                    forward: Callable[[torch.Tensor], concurrent.futures.Future]) -> concurrent.futures.Future:
        """Decode the video in a worker and hand its views to `forward` (the model thread's submit) from the
        pool's own thread, without a turn through the event loop. The future gets (Decoded, the model's
        Scores), or (Decoded with its error, None); a crash of the worker decoding it is retried once.
        Cancelling it cancels a decode not yet started."""
        outcome: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(item, forward, outcome, attempts=2)
        return outcome

    def _submit(self, item: VideoInput, forward: Callable, outcome: concurrent.futures.Future, attempts: int) -> None:
        pool = self.pool
        try:
            future = pool.submit(_decode, item, self.recipe)
        except BrokenProcessPool:
            self._retry(pool, item, forward, outcome, attempts)
            return
        except RuntimeError as exc:  # the pool is shutting down: the server is stopping
            _settle(outcome, error=exc)
            return
        outcome.add_done_callback(lambda done: future.cancel() if done.cancelled() else None)
        future.add_done_callback(lambda done: self._decoded(done, pool, item, forward, outcome, attempts))

    def _retry(self, broken: concurrent.futures.Executor, item: VideoInput, forward: Callable,
               outcome: concurrent.futures.Future, attempts: int) -> None:
        """A decoding process died (the pool is broken): a fresh pool, and the video again while attempts
        are left, else the video's error."""
        self._replace(broken)
        if attempts > 1:
            self._submit(item, forward, outcome, attempts - 1)
        else:
            _settle(outcome, (Decoded(0, error="the decoder crashed on this video"), None))

    def _decoded(self, future: concurrent.futures.Future, pool: concurrent.futures.Executor, item: VideoInput,
                 forward: Callable, outcome: concurrent.futures.Future, attempts: int) -> None:
        if outcome.cancelled():
            return
        try:
            decoded: Decoded = future.result()
        except BrokenProcessPool:
            self._retry(pool, item, forward, outcome, attempts)
            return
        except BaseException as exc:  # noqa: BLE001 - cancelled, or a bug: the request's answer
            _settle(outcome, error=exc)
            return
        if decoded.error is not None or decoded.views is None:
            _settle(outcome, (decoded, None))
            return
        views, decoded.views = torch.from_numpy(decoded.views), None
        forward(views).add_done_callback(lambda done: _chain(done, outcome, decoded))

    def _replace(self, broken: concurrent.futures.Executor) -> None:
        with self.lock:
            if self.pool is broken:
                self.pool = self._new_pool()
                broken.shutdown(wait=False, cancel_futures=True)
