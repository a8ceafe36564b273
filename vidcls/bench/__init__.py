"""What a model costs, and how that cost grows with the number of frames.

The report that shows why a linear video transformer exists: for each model and frame
count it measures multiply-accumulates, parameters, peak memory and latency, fits the
exponent of cost against frames, and puts the achieved FLOP rate next to the device's
measured matmul rate (the roofline).

One module per concern, each importing only those listed before it:

    flops        counting MACs with FlopCounterMode, attention included (the papers' conventions)
    models       a model reference -> an architecture to build at any shape, and its static cost
    timing       wall clock, CPU time and thread count of a timed step
    roofline     the device's measured matmul rate
    memory       peak memory of a block of work; out-of-memory recognition
    measurement  one point's memory and latency, in this process or a fresh one
    sweep        `vidcls benchmark`: every model at every frame count, scaling exponents
    outputs      the report as CSV (the chart is vidcls.viz.scaling)
    cost         `vidcls predict`'s cost line (flops and models only: no sweep, no subprocess)

The public names below are importable from `vidcls.bench` itself; each loads only its own
module on first use, so `from vidcls.bench import cost_line` does not import the sweep.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this package that defines it
_EXPORTS = {
    "ATTENTION_FORMULAS": "flops", "FlopCount": "flops", "UncountedAttentionError": "flops",
    "count_macs": "flops", "parameter_counts": "flops", "sdpa_macs": "flops",
    "BenchModel": "models", "ModelCost": "models", "model_cost": "models", "resolve_models": "models",
    "matmul_rate": "roofline", "precision_warning": "roofline",
    "PeakMemory": "memory", "is_out_of_memory": "memory",
    "Measurement": "measurement", "RunSettings": "measurement", "measure": "measurement",
    "measure_isolated": "measurement",
    "BenchPoint": "sweep", "BenchReport": "sweep", "benchmark": "sweep", "scaling_exponent": "sweep",
    "write_csv": "outputs",
    "RunCost": "cost", "cost_line": "cost", "run_cost": "cost",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
