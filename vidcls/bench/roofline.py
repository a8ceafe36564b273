"""The device's measured matmul rate: the roofline a model's achieved FLOP rate is set against."""

from __future__ import annotations

import torch

from .timing import wall_seconds


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
        elapsed = wall_seconds(lambda: a @ b, device)
        if elapsed > 0.01 or n >= cap:
            break
        n *= 2
    best, spent = elapsed, 0.0
    while spent < seconds:
        took = wall_seconds(lambda: a @ b, device)
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


def precision_warning(device: torch.device, precision: str, rate: float, fp32_rate: float) -> str | None:
    """Why a reduced precision is a bad idea here, if it is: measured, not guessed from CPU flags."""
    if device.type != "cpu" or precision == "fp32" or rate >= fp32_rate:
        return None
    return (f"{precision} matmul on this CPU runs at {rate:.1f} GFLOP/s against {fp32_rate:.1f} for fp32 "
            f"({fp32_rate / rate:.0f}x slower: no native {precision} support), so --precision {precision} "
            f"only slows the model down here; fp32 is the CPU default")
