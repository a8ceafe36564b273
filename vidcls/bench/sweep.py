"""The sweep behind `vidcls benchmark`: every model at every frame count, and how cost grows.

For each point it combines the counted cost (models.model_cost) with the measured memory
and time (measure), and sets the achieved FLOP rate against the device's matmul rate
(roofline); the report fits the exponent of each cost against frames.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vidcls.bench.measurement import Measurement, RunSettings, measure, measure_isolated
from vidcls.bench.models import BenchModel, ModelCost, model_cost, significant
from vidcls.bench.roofline import BusyMachineWarning, matmul_rate, mfu_warning, precision_warning
from vidcls.bench.timing import cpu_threads
from vidcls.choices import AUTO
from vidcls.devices import PRECISIONS, choose_precision, describe_device, resolve_device
from vidcls.errors import UsageError


@dataclass
class BenchPoint:
    """One (model, frames) result, in the JSON schema of `benchmark --json` (docs/cli.md) plus extras."""

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
    mfu: float | None  # achieved / torch's matmul rate; for ONNX Runtime an effective rate (may exceed 1)
    compiled: bool
    error: str | None = None
    noisy: bool = False  # its repeats spread more than MAX_SPREAD: a busy machine; left out of the exponents
    runtime: str = "torch"  # torch, openvino (converted, or an exported .xml), onnxruntime (an exported .onnx), -int8
    precision_reason: str = "asked for"  # why this precision ran (--precision auto chooses from the device)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_point(model: BenchModel, frames: int, size: int, settings: RunSettings, cost: ModelCost,
               measured: Measurement, matmul_gflops: float) -> BenchPoint:
    """Combine the counted cost and the measurement of one point into its report row."""
    sig = significant
    lat = measured.latencies_ms
    median = statistics.median(lat) if lat else None
    achieved = settings.batch_size * cost.flops.gflops / (median / 1e3) if median else None
    return BenchPoint(
        model=model.name, frames=frames, size=size, batch_size=settings.batch_size, device=settings.device,
        precision=settings.precision, params=cost.params, trainable_params=cost.trainable_params,
        gmacs=sig(cost.flops.gmacs), gflops=sig(cost.flops.gflops), views=model.views,
        attention_share=sig(cost.flops.attention_share), peak_memory_mib=sig(measured.peak_memory_mib),
        latency_ms=sig(median), latency_min_ms=sig(min(lat)) if lat else None,
        latency_max_ms=sig(max(lat)) if lat else None,
        cpu_time_ms=sig(statistics.median(measured.cpu_times_ms)) if measured.cpu_times_ms else None,
        clips_per_s=sig(settings.batch_size / (median / 1e3)) if median else None,
        achieved_gflops_per_s=sig(achieved), matmul_gflops_per_s=sig(matmul_gflops),
        mfu=sig(achieved / matmul_gflops) if achieved else None, compiled=settings.compile and model.runtime == "torch",
        error=measured.error, runtime=model.runtime)


@dataclass
class BenchReport:
    """All points of a run, the device's matmul rate, and warnings to show the user."""

    points: list[BenchPoint]
    matmul_gflops_per_s: float
    warnings: list[str] = field(default_factory=list)
    machine: str = ""  # the CPU (model, ISA, threads) or GPU the points ran on
    rates: dict[str, float] = field(default_factory=dict)  # measured matmul GFLOP/s by precision (fp32, bf16)

    def machine_line(self) -> str:
        """One line naming the machine and its matmul rates, printed above the tables."""
        rates = ", ".join(f"{name} {rate:,.0f} GFLOP/s" for name, rate in self.rates.items())
        return f"machine: {self.machine}; matmul {rates}; MFU is against the rate of the precision that ran"

    def models(self) -> list[str]:
        return list(dict.fromkeys(p.model for p in self.points))

    def series(self, model: str, metric: str) -> tuple[list[int], list[float]]:
        """(frames, values) of one model's points that have `metric`."""
        rows = [(p.frames, getattr(p, metric)) for p in self.points
                if p.model == model and not (p.noisy and metric in TIMED_METRICS)]
        rows = [(t, v) for t, v in rows if v is not None and v > 0]
        return [t for t, _ in rows], [v for _, v in rows]

    def exponents(self, model: str) -> dict[str, float | None]:
        """Exponent of cost vs frames for GMACs, peak memory and latency of one model."""
        return {metric: scaling_exponent(*self.series(model, metric)) for metric in SCALING_METRICS}


SCALING_METRICS = ("gmacs", "peak_memory_mib", "latency_ms", "cpu_time_ms")
TIMED_METRICS = ("latency_ms", "cpu_time_ms")
# the most a point's slowest repeat may take over its fastest before the point is flagged: a busy machine
# once gave joint-tiny 0.99-18.99 ms in one point, and a latency "exponent" of -1.00
MAX_SPREAD = 2.0


def scaling_exponent(frames: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(frames): 1 is linear, 2 quadratic.

    None with fewer than two distinct frame counts.
    """
    if len(set(frames)) < 2:
        return None
    xs, ys = [math.log(t) for t in frames], [math.log(v) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


DEFAULT_SETTINGS = RunSettings()


def benchmark(models: Sequence[BenchModel], frames: Sequence[int], size: int | None = None,
              settings: RunSettings = DEFAULT_SETTINGS, isolate: bool | None = None,
              on_point: Callable[[BenchPoint], None] | None = None,
              on_warning: Callable[[str], None] | None = None) -> BenchReport:
    """Cost every model at every frame count: counted MACs, parameters, measured memory and time.

    size None uses each model's own input size. Every shape is checked against each
    model's patch embedding before anything is measured (UsageError). isolate (default:
    on CPU) runs each measurement in a fresh process (measure_isolated). A point that does
    not fit in memory is reported with error "out of memory at T=..." and the sweep goes
    on. on_point gets each point as it is done, on_warning each warning as soon as it is known.
    """
    _check_request(models, frames, size, settings)
    device = resolve_device(settings.device)
    settings = dataclasses.replace(settings, device=str(device))
    isolate = device.type == "cpu" if isolate is None else isolate
    exported = any(model.runtime.startswith("onnxruntime") for model in models)
    if settings.precision not in ("fp32", AUTO) and exported:
        raise UsageError(f"an exported .onnx model runs at the precision it was exported in; "
                         f"benchmark it with --precision fp32, not {settings.precision}")
    choice = choose_precision(settings.precision, device, exported=exported)
    settings = dataclasses.replace(settings, precision=choice.precision)
    found: list[str] = []

    def warn(message: str | None) -> None:
        if message:
            found.append(message)
            if on_warning is not None:
                on_warning(message)

    rates = _matmul_rates(device, settings, warn)
    rate = rates[settings.precision]
    warn(precision_warning(device, settings.precision, rate, rates["fp32"]))
    points = []
    for model in models:
        for t in frames:
            point = _measure_point(model, t, size, settings, rate, isolate)
            point = dataclasses.replace(point, precision_reason=choice.reason, noisy=_spread(point) > MAX_SPREAD)
            points.append(point)
            warn(mfu_warning(model.name, t, point.mfu, effective=model.runtime != "torch"))
            if point.noisy:
                warn(f"{model.name} at T={t}: its repeats took {point.latency_min_ms:g}-{point.latency_max_ms:g} ms "
                     f"({_spread(point):.1f}x apart): the machine was busy; the point is left out of the "
                     f"time exponents (rerun it on a quiet machine)")
            if on_point is not None:
                on_point(point)
    return BenchReport(points, significant(rate), found, describe_device(device),
                       {name: significant(value) for name, value in rates.items()})


def _spread(point: BenchPoint) -> float:
    """Slowest over fastest repeat (1.0 when not measured)."""
    if not point.latency_min_ms or not point.latency_max_ms:
        return 1.0
    return point.latency_max_ms / point.latency_min_ms


def _check_request(models: Sequence[BenchModel], frames: Sequence[int], size: int | None,
                   settings: RunSettings) -> None:
    """UsageError for an empty sweep or a shape a model's patch embedding refuses (settings check themselves)."""
    if not models or not frames or any(t < 1 for t in frames):
        raise UsageError("benchmark needs at least one model and positive frame counts")
    for model in models:
        for t in frames:
            model.check_shape(t, size or model.size)


def _matmul_rates(device: torch.device, settings: RunSettings,
                  warn: Callable[[str | None], None]) -> dict[str, float]:
    """The device's matmul rate (GFLOP/s) at fp32, bf16 and the run's precision, so a report shows what
    the machine could do at each; busy-machine warnings go to `warn`."""
    with cpu_threads(settings.threads), warnings.catch_warnings(record=True) as busy:
        warnings.simplefilter("always", BusyMachineWarning)
        rates = {name: matmul_rate(device, PRECISIONS[name]) for name in dict.fromkeys(("fp32", "bf16",
                                                                                        settings.precision))}
    for caught in busy:
        if issubclass(caught.category, BusyMachineWarning):
            warn(str(caught.message))
        else:  # not ours to report: back to Python's warning machinery
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
    return rates


def _measure_point(model: BenchModel, frames: int, size: int | None, settings: RunSettings, rate: float,
                   isolate: bool) -> BenchPoint:
    """Count and measure one model at one frame count (in a fresh process if `isolate`)."""
    shape = (frames, size or model.size)
    cost = model_cost(model, *shape)
    measured = (measure_isolated if isolate else measure)(model, *shape, settings)
    return make_point(model, *shape, settings, cost, measured, rate)
