"""Counting the multiply-accumulates of one forward pass, attention included.

Conventions, chosen to match the papers:

* `gmacs` counts the multiply-accumulates of matrix products and convolutions (what the
  video-transformer papers call "GFLOPs"); `gflops` = 2 x `gmacs`. Norms, softmax,
  activations and bias adds are not counted, as in the papers' counters.
* Counting goes through `torch.utils.flop_counter.FlopCounterMode`, which works on the
  `meta` device too (no memory, about a second for a full-size model at 64 frames). torch
  counts `bmm`/`mm`/convolutions but gives the CPU attention kernels no formula, so
  `ATTENTION_FORMULAS` adds one for every scaled-dot-product-attention path, and any
  attention op that still counts zero raises `UncountedAttentionError` rather than
  under-reporting the quadratic part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vidcls.models.layers import WEIGHT_LAYERS

aten = torch.ops.aten


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

    attention_macs: products outside WEIGHT_LAYERS (q k^T and attn v in softmax
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
                                      f"FLOPs; add a formula to vidcls.bench.flops.ATTENTION_FORMULAS")
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
