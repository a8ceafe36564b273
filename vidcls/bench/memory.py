"""Peak memory of a block of work, and recognising out-of-memory failures.

Peak memory is what the work allocates on top of what was held before it (the weights,
the input): the CUDA allocator's peak after a reset, or on CPU the process's peak resident
set (Linux VmHWM, reset through /proc/self/clear_refs) after freed heap memory has been
returned to the OS with malloc_trim, so pages the allocator kept from earlier work cannot
hide the block's own allocations.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
from pathlib import Path
from typing import Any

import torch

MIB = float(1 << 20)


def proc_status_kib(key: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM, VmSize), or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _release_freed_heap(collect: bool) -> None:
    """Return freed malloc memory to the OS (glibc), so the resident baseline is live data only;
    collect: run the cyclic garbage collector first (benchmark points; predict skips its 0.1-0.2 s)."""
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager: the peak memory (MiB) allocated inside it, above what was held at entry.

    CUDA: the caching allocator's max_memory_allocated after reset_peak_memory_stats.
    CPU (Linux): peak resident set (VmHWM, reset via /proc/self/clear_refs) minus the
    resident set at entry, taken after malloc_trim so earlier freed memory is not reused
    unseen. `mib` is None where neither is available.
    """

    def __init__(self, device: torch.device, collect: bool = True) -> None:
        self.device, self.collect = device, collect
        self.mib: float | None = None
        self._start: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MIB
        elif self.device.type == "cpu":
            _release_freed_heap(self.collect)
            resident = proc_status_kib("VmRSS")
            try:
                Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak resident set
            except OSError:
                resident = None
            self._start = resident / 1024 if resident is not None else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            peak = (proc_status_kib("VmHWM") or 0) / 1024
        self.mib = max(peak - self._start, 0.0)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, MemoryError, or the CPU allocator's failure message."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory"))
