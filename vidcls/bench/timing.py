"""How a step is timed: device-synchronised wall clock, process CPU time, and the CPU thread count."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a clock read after it covers the step and no more."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_seconds(step: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call of `step`, device work included."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def wall_and_cpu_ms(step: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall-clock ms, process CPU ms over all threads) of one call of `step`."""
    cpu = time.process_time()
    wall = wall_seconds(step, device)
    return 1e3 * wall, 1e3 * (time.process_time() - cpu)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch CPU threads, restoring the previous count after.

    On a machine busier than its core count, one thread gives far steadier timings: a
    multi-threaded kernel waits at every barrier for its slowest, descheduled thread.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
