"""The device's measured matmul rate: the roofline a model's achieved FLOP rate is set against.

One reading taken while another job holds the cores can be 10-50x low (a benchmark run once
reported 3.0 GFLOP/s and an MFU of 1499%). So the rate is the best of several readings, each
reading is compared with the last good one of this device, dtype and thread count (kept in
$VIDCLS_HOME/roofline.json), and a rate far below it is measured again after a pause; one
that stays far below is kept out of the record and announced with a BusyMachineWarning.
"""

from __future__ import annotations

import json
import time
import warnings
from functools import partial
from pathlib import Path

import torch

from vidcls.bench.timing import wall_seconds
from vidcls.fileio import write_text_atomic

READINGS = 3  # separate readings per measurement, the best one kept
FAR_BELOW = 0.5  # a rate under this share of the last good reading is re-measured
RETRIES = 2  # further measurements (after RETRY_PAUSE_S) while it stays far below
RETRY_PAUSE_S = 1.0


class BusyMachineWarning(UserWarning):
    """The matmul rate stayed far below its last good reading: the machine is busy, numbers are low."""


def matmul_reading(device: torch.device, dtype: torch.dtype, seconds: float = 0.25) -> float:
    """One reading of the dense matmul rate in GFLOP/s at `dtype` (best of repeated n x n products).

    n doubles from 256 until one product takes 10 ms (capped), so a dtype without native
    support (50-500x slower) is measured in a fraction of a second too.
    """
    cap = 8192 if device.type == "cuda" else 2048
    n, elapsed = 256, 0.0
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        elapsed = wall_seconds(partial(torch.matmul, a, b), device)
        if elapsed > 0.01 or n >= cap:
            break
        n *= 2
    best, spent = elapsed, 0.0
    while spent < seconds:
        took = wall_seconds(lambda: a @ b, device)
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


def record_path() -> Path:
    from vidcls.zoo.cache import home

    return home() / "roofline.json"


def _key(device: torch.device, dtype: torch.dtype) -> str:
    return f"{device.type}/{str(dtype).removeprefix('torch.')}/{torch.get_num_threads()} threads"


def _read_record() -> dict[str, float]:
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def matmul_rate(device: torch.device, dtype: torch.dtype, readings: int = READINGS) -> float:
    """The device's matmul rate in GFLOP/s: the best of `readings` readings, measured again while it is
    far below the last good one (see the module docstring); a good rate becomes the new record."""
    key, record = _key(device, dtype), _read_record()
    last = record.get(key)
    rate = max(matmul_reading(device, dtype) for _ in range(readings))
    for _ in range(RETRIES):
        if not last or rate >= FAR_BELOW * last:
            break
        time.sleep(RETRY_PAUSE_S)
        rate = max(rate, *(matmul_reading(device, dtype) for _ in range(readings)))
    if last and rate < FAR_BELOW * last:
        warnings.warn(BusyMachineWarning(
            f"the matmul rate measured now ({rate:.1f} GFLOP/s) stays far below the last good reading on this "
            f"machine ({last:.1f} GFLOP/s, {key}): it is busy, so this run's latencies are high and its MFU is "
            f"set against a low roofline"), stacklevel=2)
        return rate
    write_text_atomic(record_path(), json.dumps({**record, key: round(rate, 3)}, indent=2) + "\n")
    return rate


def mfu_warning(model: str, frames: int, mfu: float | None, effective: bool) -> str | None:
    """An MFU above 100% of torch's own matmul rate is a measurement error for a torch model (the
    rate was read low). Not for an effective one: an ONNX Runtime point runs other GEMM kernels
    (MLAS, which beats torch's sgemm ~1.8x on the AMD EPYC this was measured on) and, for int8,
    integer products counted as the torch graph's fp32 FLOPs; its MFU may exceed 100%."""
    if mfu is None or mfu <= 1.0 or effective:
        return None
    return (f"{model} T={frames}: MFU {mfu:.0%} exceeds 100% of the measured matmul rate, which is a "
            f"measurement error (the rate was read while the machine was busy); rerun, with --threads 1 on a "
            f"shared machine")


def precision_warning(device: torch.device, precision: str, rate: float, fp32_rate: float) -> str | None:
    """Why a reduced precision is a bad idea here, if it is: measured, not guessed from CPU flags."""
    if device.type != "cpu" or precision == "fp32" or rate >= fp32_rate:
        return None
    return (f"{precision} matmul on this CPU runs at {rate:.1f} GFLOP/s against {fp32_rate:.1f} for fp32 "
            f"({fp32_rate / rate:.0f}x slower: no native {precision} support), so --precision {precision} "
            f"only slows the model down here; fp32 is the CPU default")
