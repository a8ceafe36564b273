"""What a model costs, and how that cost grows with the number of frames.

The report that shows why a linear video transformer exists: for each model and frame
count it measures multiply-accumulates, parameters, peak memory and latency, fits the
exponent of cost against frames, and puts the achieved FLOP rate next to the device's
measured matmul rate (the roofline).

Conventions, chosen to match the papers:

* `gmacs` counts the multiply-accumulates of matrix products and convolutions (what the
  video-transformer papers call "GFLOPs"); `gflops` = 2 x `gmacs`. Norms, softmax,
  activations and bias adds are not counted, as in the papers' counters.
* FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one clip, on the
  `meta` device when the model allows it (no memory and about a second, so full-size
  models at 64 frames are cheap to count). torch counts `bmm`/`mm`/convolutions but gives the CPU
  attention kernels no formula, so `ATTENTION_FORMULAS` adds one for every
  scaled-dot-product-attention path, and any attention op that still counts zero raises
  `UncountedAttentionError` rather than under-reporting the quadratic part.
* Peak memory is what the forward pass allocates on top of what was held before it (the
  weights, the input): the CUDA allocator's peak after a reset, or on CPU the process's
  peak resident set (Linux VmHWM, reset through /proc/self/clear_refs) after freed heap
  memory has been returned to the OS with malloc_trim, so pages the allocator kept from
  earlier work cannot hide the forward's own allocations.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import gc
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .errors import UsageError, VidclsError
from .fileio import atomic_file
from .inference import PRECISIONS, autocast_context, resolve_device
from .models import build_model, families
from .zoo import ModelCard, resolve

MIB = float(1 << 20)
aten = torch.ops.aten

# ---------------------------------------------------------------- FLOPs


class UncountedAttentionError(RuntimeError):
    """An attention op ran but the counter has no formula for it (a bug, not a user error)."""


def sdpa_macs(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """Multiply-accumulates of softmax(q k^T) v for (..., L, E) query, (..., S, E) key, (..., S, Ev) value.

    The leading axes broadcast, as in torch's SDPA (any number of them, not only 4-D).
    No causal or mask discount: our models attend densely.
    """
    batch = math.prod(torch.broadcast_shapes(tuple(query[:-2]), tuple(key[:-2]), tuple(value[:-2])))
    return batch * query[-2] * key[-2] * (query[-1] + value[-1])


def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula (it counts FLOPs = 2 x MACs); receives shapes, not tensors."""
    return 2 * sdpa_macs(query, key, value)


def _attention_ops() -> list:
    names = ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_attention_math", "_scaled_dot_product_attention_math_for_mps",
             "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    return [getattr(aten, name) for name in names if hasattr(aten, name)]


# Every SDPA entry point, CPU and CUDA, counted by one formula. Linear attention needs
# none: its einsums and matmuls reach the counter as bmm/mm, which torch already counts.
ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {op: _sdpa_flops for op in _attention_ops()}
# Layers whose products are with weights; every other product multiplies activations with
# activations, which in a video transformer is attention's token mixing.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _ExecutedOps(TorchDispatchMode):
    """Records every op that actually executes under the FLOP counter (entered outside it).

    FlopCounterMode silently counts 0 for an op it has no formula for; this is how we
    notice an attention op that slipped through.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class FlopCount:
    """Multiply-accumulates of one forward pass, and the part spent mixing tokens in attention.

    attention_macs: products outside Linear/Conv layers (q k^T and attn v in softmax
    attention, k^T v and q (k^T v) in linear attention); the qkv and output projections
    are weight products and count as dense.
    """

    macs: int
    attention_macs: int
    by_op: dict[str, int]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    @property
    def attention_share(self) -> float:
        return self.attention_macs / self.macs if self.macs else 0.0


def count_macs(module: nn.Module, clip: torch.Tensor) -> FlopCount:
    """Count one inference forward of `module` on `clip` (any device, `meta` included).

    Raises UncountedAttentionError if an attention op executed but was counted as zero.
    """
    counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS)
    with torch.inference_mode(), _ExecutedOps() as executed, counter:
        module(clip)
    by_module = counter.get_flop_counts()
    counts = by_module.get("Global", {})
    silent = sorted(str(op) for op in executed.ops if "attention" in str(op) and not counts.get(op))
    if silent:
        raise UncountedAttentionError(f"attention op(s) {', '.join(silent)} ran but were counted as 0 "
                                      f"FLOPs; add a formula to vidcls.bench.ATTENTION_FORMULAS")
    # The counter names modules "RootClass.path.to.child" (torch's ModuleTracker).
    root = type(module).__name__
    weight_names = {f"{root}.{name}" for name, sub in module.named_modules() if name and isinstance(sub, WEIGHT_LAYERS)}
    flops = sum(counts.values())
    weight_flops = sum(sum(by_module.get(name, {}).values()) for name in weight_names)
    return FlopCount(macs=flops // 2, attention_macs=(flops - weight_flops) // 2,
                     by_op={str(op): n // 2 for op, n in counts.items()})


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# ---------------------------------------------------------------- what is benchmarked


@dataclass(frozen=True)
class BenchModel:
    """A model to cost: family, architecture, and the recipe it is fed with.

    The benchmark rebuilds the architecture for each frame count and size (where the
    config has `num_frames` / `img_size`), so learned position tables are sized for the
    shape instead of interpolated: cost does not depend on the weights.
    """

    name: str
    family: str
    arch: dict[str, Any]
    frames: int
    size: int
    views: int = 1  # clips x crops of the recipe's test protocol

    @classmethod
    def from_card(cls, card: ModelCard) -> BenchModel:
        spec = card.input
        return cls(name=card.name, family=card.family, arch=dict(card.arch), frames=spec.frames,
                   size=spec.size, views=spec.clips * spec.crops)

    def arch_at(self, frames: int, size: int) -> dict[str, Any]:
        """The architecture re-sized for clips of `frames` x `size` x `size`."""
        fields = {f.name for f in dataclasses.fields(families()[self.family].Config)}
        shape = {"num_frames": frames, "img_size": size}
        return {**self.arch, **{k: v for k, v in shape.items() if k in fields}}

    def build(self, frames: int, size: int) -> nn.Module:
        """A randomly initialised model for this shape, on the current default device, in eval mode."""
        return build_model(self.family, self.arch_at(frames, size)).eval()


def resolve_models(refs: Sequence[str]) -> list[BenchModel]:
    """Model references (zoo names, hf://, directories) -> what the benchmark builds; no weights read."""
    return [BenchModel.from_card(resolve(ref, need_weights=False).card) for ref in refs]


@dataclass(frozen=True)
class ModelCost:
    """Static cost of a model at one clip shape: per-view MACs and parameters."""

    flops: FlopCount
    params: int
    trainable_params: int


def model_cost(model: BenchModel, frames: int, size: int) -> ModelCost:
    """Count MACs of one view and the parameters, on the meta device when the model allows.

    A model whose forward needs real data (data-dependent shapes) falls back to a real CPU
    forward, which is exact but takes the model's real time and memory.
    """
    try:
        with torch.device("meta"):
            module = model.build(frames, size)
            clip = torch.empty(1, 3, frames, size, size)
            flops = count_macs(module, clip)
    except (NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, UncountedAttentionError):
            raise
        module = model.build(frames, size)
        flops = count_macs(module, torch.zeros(1, 3, frames, size, size))
    return ModelCost(flops, *parameter_counts(module))


# ---------------------------------------------------------------- roofline


def matmul_rate(device: torch.device, dtype: torch.dtype, seconds: float = 0.25) -> float:
    """The device's measured dense matmul rate in GFLOP/s at `dtype` (best of repeated n x n products).

    n doubles from 256 until one product takes 10 ms (capped), so a dtype without native
    support (50-500x slower) is measured in a fraction of a second too.
    """
    cap = 8192 if device.type == "cuda" else 2048
    n, elapsed = 256, 0.0
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        elapsed = _seconds(lambda: a @ b, device)
        if elapsed > 0.01 or n >= cap:
            break
        n *= 2
    best, spent = elapsed, 0.0
    while spent < seconds:
        took = _seconds(lambda: a @ b, device)
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


def _seconds(step: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def _wall_and_cpu_ms(step: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    cpu = time.process_time()
    wall = _seconds(step, device)
    return 1e3 * wall, 1e3 * (time.process_time() - cpu)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_warning(device: torch.device, precision: str, rate: float, fp32_rate: float) -> str | None:
    """Why a reduced precision is a bad idea here, if it is: measured, not guessed from CPU flags."""
    if device.type != "cpu" or precision == "fp32" or rate >= fp32_rate:
        return None
    return (f"{precision} matmul on this CPU runs at {rate:.1f} GFLOP/s against {fp32_rate:.1f} for fp32 "
            f"({fp32_rate / rate:.0f}x slower: no native {precision} support), so --precision {precision} "
            f"only slows the model down here; fp32 is the CPU default")


# ---------------------------------------------------------------- memory and time


def _proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _release_freed_heap() -> None:
    """Return freed malloc memory to the OS (glibc), so the resident baseline is live data only."""
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

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None
        self._start: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MIB
        elif self.device.type == "cpu":
            _release_freed_heap()
            resident = _proc_status_kib("VmRSS")
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
            peak = (_proc_status_kib("VmHWM") or 0) / 1024
        self.mib = max(peak - self._start, 0.0)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, MemoryError, or the CPU allocator's failure message."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory"))


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
    precision: str = "fp32"
    warmup: int = 2
    repeats: int = 5
    compile: bool = False
    threads: int | None = None  # CPU threads (torch.set_num_threads); None keeps torch's default


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


def measure(model: BenchModel, frames: int, size: int, settings: RunSettings) -> Measurement:
    """Build the model here, warm it up, then time `repeats` forwards and record their peak memory.

    Under torch.inference_mode and the precision's autocast. Out-of-memory becomes
    Measurement.error instead of an exception, so a sweep can go on past it.
    """
    device = torch.device(settings.device)
    try:
        with cpu_threads(settings.threads):
            with torch.device(device):
                module = model.build(frames, size)
                clip = torch.randn(settings.batch_size, 3, frames, size, size)
            forward = torch.compile(module) if settings.compile else module
            with torch.inference_mode(), autocast_context(device, settings.precision):
                for _ in range(settings.warmup):
                    forward(clip)
                with PeakMemory(device) as peak:
                    runs = [_wall_and_cpu_ms(lambda: forward(clip), device) for _ in range(settings.repeats)]
    except Exception as exc:  # noqa: BLE001 - any failure of one point is reported on that point
        if not is_out_of_memory(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Measurement(error=f"out of memory at T={frames}")
    return Measurement([wall for wall, _ in runs], [cpu for _, cpu in runs], peak.mib)


_ISOLATED_ENTRY = "from vidcls.bench import _isolated_main; _isolated_main()"


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


def _isolated_main() -> None:
    """Child side of measure_isolated: JSON request on stdin, JSON Measurement on stdout."""
    import resource

    request = json.loads(sys.stdin.read())
    limit = request["memory_limit_mib"] or (0.9 * (_available_mib() or 0.0)) or None
    size_now = _proc_status_kib("VmSize")
    if limit is not None and size_now is not None:
        cap = int(size_now * 1024 + limit * MIB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    result = measure(BenchModel(**request["model"]), request["frames"], request["size"],
                     RunSettings(**request["settings"]))
    print(json.dumps(dataclasses.asdict(result)))


# ---------------------------------------------------------------- the sweep


@dataclass
class BenchPoint:
    """One (model, frames) result, in the JSON schema of `benchmark --json` (cli.md) plus extras."""

    model: str
    frames: int
    size: int
    batch_size: int
    device: str
    precision: str
    params: int
    trainable_params: int
    gmacs: float  # per view (one clip of batch 1)
    gflops: float
    views: int  # of the model's test recipe: a prediction costs gmacs x views
    attention_share: float  # share of gmacs in attention's token mixing (SDPA, batched products)
    peak_memory_mib: float | None
    latency_ms: float | None  # median over repeats, one forward of batch_size clips
    latency_min_ms: float | None
    latency_max_ms: float | None
    cpu_time_ms: float | None  # median process CPU time per forward (see Measurement)
    clips_per_s: float | None
    achieved_gflops_per_s: float | None
    matmul_gflops_per_s: float  # the device's measured matmul rate at this precision
    mfu: float | None  # achieved / matmul rate
    compiled: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_point(model: BenchModel, frames: int, size: int, settings: RunSettings, cost: ModelCost,
               measured: Measurement, matmul_gflops: float) -> BenchPoint:
    """Combine the counted cost and the measurement of one point into its report row."""
    lat = measured.latencies_ms
    median = statistics.median(lat) if lat else None
    achieved = settings.batch_size * cost.flops.gflops / (median / 1e3) if median else None
    return BenchPoint(
        model=model.name, frames=frames, size=size, batch_size=settings.batch_size, device=settings.device,
        precision=settings.precision, params=cost.params, trainable_params=cost.trainable_params,
        gmacs=_sig(cost.flops.gmacs), gflops=_sig(cost.flops.gflops), views=model.views,
        attention_share=_sig(cost.flops.attention_share), peak_memory_mib=_sig(measured.peak_memory_mib),
        latency_ms=_sig(median), latency_min_ms=_sig(min(lat)) if lat else None,
        latency_max_ms=_sig(max(lat)) if lat else None,
        cpu_time_ms=_sig(statistics.median(measured.cpu_times_ms)) if measured.cpu_times_ms else None,
        clips_per_s=_sig(settings.batch_size / (median / 1e3)) if median else None,
        achieved_gflops_per_s=_sig(achieved), matmul_gflops_per_s=_sig(matmul_gflops),
        mfu=_sig(achieved / matmul_gflops) if achieved else None, compiled=settings.compile,
        error=measured.error)


def _sig(value: float | None, digits: int = 6) -> float | None:
    """Round to significant digits, so tiny and full-size models keep the same relative precision."""
    return None if value is None else float(f"{value:.{digits}g}")


@dataclass
class BenchReport:
    """All points of a run, the device's matmul rate, and warnings to show the user."""

    points: list[BenchPoint]
    matmul_gflops_per_s: float
    warnings: list[str] = field(default_factory=list)

    def models(self) -> list[str]:
        return list(dict.fromkeys(p.model for p in self.points))

    def series(self, model: str, metric: str) -> tuple[list[int], list[float]]:
        """(frames, values) of one model's points that have `metric`."""
        rows = [(p.frames, getattr(p, metric)) for p in self.points if p.model == model]
        rows = [(t, v) for t, v in rows if v is not None and v > 0]
        return [t for t, _ in rows], [v for _, v in rows]

    def exponents(self, model: str) -> dict[str, float | None]:
        """Exponent of cost vs frames for GMACs, peak memory and latency of one model."""
        return {metric: scaling_exponent(*self.series(model, metric)) for metric in SCALING_METRICS}


SCALING_METRICS = ("gmacs", "peak_memory_mib", "latency_ms", "cpu_time_ms")


def scaling_exponent(frames: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(frames): 1 is linear, 2 quadratic.

    None with fewer than two distinct frame counts.
    """
    if len(set(frames)) < 2:
        return None
    xs, ys = [math.log(t) for t in frames], [math.log(v) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def benchmark(models: Sequence[BenchModel], frames: Sequence[int], size: int | None = None,
              settings: RunSettings = RunSettings(), isolate: bool | None = None,
              on_point: Callable[[BenchPoint], None] | None = None,
              on_warning: Callable[[str], None] | None = None) -> BenchReport:
    """Cost every model at every frame count: counted MACs, parameters, measured memory and time.

    size None uses each model's own input size. isolate (default: on CPU) runs each
    measurement in a fresh process (measure_isolated). A point that does not fit in memory
    is reported with error "out of memory at T=..." and the sweep goes on. on_point gets
    each point as it is done, on_warning each warning as soon as it is known.
    """
    if not models or not frames or any(t < 1 for t in frames):
        raise UsageError("benchmark needs at least one model and positive frame counts")
    if settings.precision not in PRECISIONS:
        raise UsageError(f"bad precision {settings.precision!r}; choose from {', '.join(PRECISIONS)}")
    device = resolve_device(settings.device)
    settings = dataclasses.replace(settings, device=str(device))
    isolate = device.type == "cpu" if isolate is None else isolate
    with cpu_threads(settings.threads):
        rate = matmul_rate(device, PRECISIONS[settings.precision])
        fp32 = rate if settings.precision == "fp32" else matmul_rate(device, torch.float32)
    warning = precision_warning(device, settings.precision, rate, fp32)
    if warning and on_warning is not None:
        on_warning(warning)
    points = []
    for model in models:
        for t in frames:
            shape = (t, size or model.size)
            cost = model_cost(model, *shape)
            measured = (measure_isolated if isolate else measure)(model, *shape, settings)
            points.append(make_point(model, *shape, settings, cost, measured, rate))
            if on_point is not None:
                on_point(points[-1])
    return BenchReport(points, _sig(rate), [warning] if warning else [])


# ---------------------------------------------------------------- outputs


def write_csv(report: BenchReport, path: str | Path) -> Path:
    """One CSV row per point, the JSON fields as columns."""
    path = Path(path)
    columns = [f.name for f in dataclasses.fields(BenchPoint)]
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(p.to_json() for p in report.points)
    return path


PLOT_PANELS = (("gmacs", "GMACs per view"), ("peak_memory_mib", "peak memory (MiB)"),
               ("latency_ms", "latency (ms)"))


def require_matplotlib():
    """matplotlib.pyplot on the file-only Agg backend, or a one-line error saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VidclsError("--plot needs matplotlib: pip install matplotlib (the vidcls 'plot' extra)") from None
    return plt


def write_plot(report: BenchReport, path: str | Path, title: str | None = None) -> Path:
    """PNG of GMACs, peak memory and latency against frames, one line per model, log-log axes."""
    plt = require_matplotlib()
    path = Path(path)
    fig, axes = plt.subplots(1, len(PLOT_PANELS), figsize=(13, 4.2), dpi=100, layout="constrained")
    for ax, (metric, label) in zip(axes, PLOT_PANELS):
        for model in report.models():
            xs, ys = report.series(model, metric)
            if xs:
                ax.plot(xs, ys, marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames T")
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs frames")
        ax.grid(True, which="both", alpha=0.3)
    frames = sorted({p.frames for p in report.points})
    for ax in axes:
        ax.set_xticks(frames, [str(t) for t in frames])
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the cost line of `predict`


@dataclass(frozen=True)
class RunCost:
    """The cost fields `predict` reports for a run: MACs per view, views, peak memory."""

    gmacs: float
    views: int
    peak_memory_mib: float | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_cost(card: ModelCard, clips: int | None, crops: int | None,
             peak_memory_mib: float | None) -> RunCost:
    """The cost of a predict run: GMACs of one view at the model's input recipe (the same for
    every video, so counted once), the views per video (clips x crops, recipe by default)."""
    model = BenchModel.from_card(card)
    gmacs = model_cost(model, model.frames, model.size).flops.gmacs
    views = (clips or card.input.clips) * (crops or card.input.crops)
    return RunCost(_sig(gmacs), views, _sig(peak_memory_mib))


def cost_line(cost: RunCost, timings: Sequence[dict[str, float]]) -> str:
    """The one-line summary printed under predict's table; times are summed over the run's videos."""
    memory = "n/a" if cost.peak_memory_mib is None else f"{cost.peak_memory_mib:.0f} MiB"
    totals = {step: sum(t.get(step, 0.0) for t in timings) for step in ("decode", "preprocess", "model")}
    split = ", ".join(f"{step} {ms:.0f} ms" for step, ms in totals.items())
    return (f"cost: {cost.gmacs:.4g} GMACs per view x {cost.views} views, peak memory {memory}, "
            f"time {split}")
