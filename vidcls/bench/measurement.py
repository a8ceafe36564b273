"""Measuring one (model, shape) point: peak memory and latency of its forward passes, in this
process or in a fresh one.

A fresh process per point (`measure_isolated`, the CPU default) means no point inherits
another's heap, caches or allocator state, and one too large for the machine fails with
out-of-memory inside the child instead of taking the sweep down.
"""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidcls.bench.memory import MIB, PeakMemory, is_out_of_memory, proc_status_kib
from vidcls.bench.models import BenchModel
from vidcls.bench.timing import cpu_threads, wall_and_cpu_ms
from vidcls.choices import AUTO, check_precision, check_runtime
from vidcls.devices import PRECISIONS, autocast_context, cast_module, choose_precision
from vidcls.errors import UsageError, VidclsError


@dataclass
class Measurement:
    """Measured peak memory and latencies of one (model, shape) point, or why there are none.

    cpu_times_ms: process CPU time (all threads) of each timed forward. With one thread on
    a machine shared with other jobs it is the steadier measure of work: wall-clock
    latency also counts the time the process waited for a core.
    """

    latencies_ms: list[float] = field(default_factory=list)
    cpu_times_ms: list[float] = field(default_factory=list)
    peak_memory_mib: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """How each point is run: everything except the model and the shape."""

    batch_size: int = 1
    device: str = "cpu"
    precision: str = AUTO  # "auto": chosen from the device (devices.choose_precision)
    warmup: int = 2
    repeats: int = 5
    compile: bool = False
    threads: int | None = None  # CPU threads (torch.set_num_threads); None keeps torch's default
    runtime: str = "torch"  # or "openvino": torch models converted (cached) and timed on OpenVINO

    def __post_init__(self) -> None:
        """Refused here, before any model is built (benchmark's counterpart of inference's RunOptions)."""
        at_least = {"batch_size": (self.batch_size, 1), "warmup": (self.warmup, 0), "repeats": (self.repeats, 1),
                    "threads": (self.threads, 1)}
        bad = [f"{name} must be >= {low}, got {value}" for name, (value, low) in at_least.items()
               if value is not None and value < low]
        if bad:
            raise UsageError(", ".join(bad))
        check_precision(self.precision)
        check_runtime(self.runtime)


def measure(model: BenchModel, frames: int, size: int, settings: RunSettings) -> Measurement:
    """Build the model here, warm it up, then time `repeats` forwards and record their peak memory.

    Under torch.inference_mode, the weights cast once to the precision as predict does, "auto" chosen
    for the device (devices.choose_precision); an exported .onnx model runs on ONNX Runtime as
    exported, an OpenVINO model takes the precision from autocast, and --compile applies to neither.
    Out-of-memory becomes
    Measurement.error instead of an exception, so a sweep can go on past it.
    """
    device = torch.device(settings.device)
    try:
        with cpu_threads(settings.threads):
            module = model.runner(frames, size, device)
            torch_model = model.runtime == "torch"
            exported = model.runtime.startswith("onnx")
            precision = choose_precision(settings.precision, device, exported=exported).precision
            module = cast_module(module, precision) if torch_model else module
            dtype = PRECISIONS[precision] if torch_model else torch.float32
            clip = torch.randn(settings.batch_size, 3, frames, size, size, device=device, dtype=dtype)
            forward = torch.compile(module) if settings.compile and torch_model else module
            # a runtime module (OpenVINO) reads the precision from autocast; a torch model is cast once
            with torch.inference_mode(), autocast_context(device, "fp32" if torch_model else precision):
                for _ in range(settings.warmup):
                    forward(clip)
                with PeakMemory(device) as peak:
                    runs = [wall_and_cpu_ms(lambda: forward(clip), device) for _ in range(settings.repeats)]
    except Exception as exc:  # noqa: BLE001 - any failure of one point is reported on that point
        if not is_out_of_memory(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Measurement(error=f"out of memory at T={frames}")
    return Measurement([wall for wall, _ in runs], [cpu for _, cpu in runs], peak.mib)


# What the child process runs: it must name the module that defines _isolated_main.
_ISOLATED_ENTRY = f"from {__name__} import _isolated_main; _isolated_main()"


def measure_isolated(model: BenchModel, frames: int, size: int, settings: RunSettings,
                     memory_limit_mib: float | None = None) -> Measurement:
    """`measure` in a fresh Python process, so no point inherits another's memory or caches.

    The child's address space is capped (default: 90% of the memory available now above
    what it holds), so a point too large for this machine fails with out-of-memory in the
    child instead of waking the kernel's OOM killer.
    """
    request = {"model": dataclasses.asdict(model), "frames": frames, "size": size,
               "settings": dataclasses.asdict(settings), "memory_limit_mib": memory_limit_mib}
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_ENTRY], input=json.dumps(request),
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return Measurement(**json.loads(proc.stdout.strip().splitlines()[-1]))
    if proc.returncode == -9:  # SIGKILL: the OOM killer
        return Measurement(error=f"out of memory at T={frames} (process killed)")
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise VidclsError(f"{model.name} at T={frames}: benchmark process failed: {last}")


def _available_mib() -> float | None:
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def address_cap(wanted: int, soft: int, hard: int) -> int:
    """The child's soft address-space limit: `wanted`, but never above a limit already set (a
    user's `ulimit -v` sets both; a soft limit above the hard one is refused by the kernel)."""
    return min([wanted] + [limit for limit in (soft, hard) if limit != resource.RLIM_INFINITY])


def _isolated_main() -> None:
    """Child side of measure_isolated: JSON request on stdin, JSON Measurement on stdout."""
    # A first forward pass imports torch._dynamo lazily (einops registers with it); under the
    # address-space cap that import can fail with OSError ("could not get source code") instead of
    # MemoryError, which the measurement would not recognise as out-of-memory: import it uncapped.
    import torch._dynamo  # noqa: F401

    request = json.loads(sys.stdin.read())
    limit = request["memory_limit_mib"] or (0.9 * (_available_mib() or 0.0)) or None
    size_now = proc_status_kib("VmSize")
    if limit is not None and size_now is not None:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (address_cap(int(size_now * 1024 + limit * MIB), soft, hard), hard))
    result = measure(BenchModel(**request["model"]), request["frames"], request["size"],
                     RunSettings(**request["settings"]))
    print(json.dumps(dataclasses.asdict(result)))
