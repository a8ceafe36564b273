"""Where and how a model runs: the device, the precision, and the torchrun process group.

The one low module that inference, benchmark and training share for these choices, so
`--device`, `--precision` and torchrun mean the same in every command.

torchrun: `torchrun --nproc-per-node N -m vidcls train ...` starts N copies of the command
with RANK, WORLD_SIZE and LOCAL_RANK in the environment. Without them every process-group
helper here is a no-op for a single process, so callers have one code path.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vidcls import choices
from vidcls.errors import UsageError


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an unavailable CUDA request is a usage error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad device {name!r}; use {choices.DEVICE_METAVAR}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but CUDA is not available here")
    return device


PRECISIONS = {name: getattr(torch, dtype) for name, dtype in choices.PRECISIONS.items()}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why (shown in the cost line, --json and benchmark rows)."""

    precision: str
    reason: str


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them (/proc/cpuinfo); empty where it does not."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def cpu_isa() -> str:
    """The widest matrix/vector instruction set the CPU reports: AMX, AVX-512, AVX2, or torch's own name."""
    flags = cpu_flags()
    for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return torch.backends.cpu.get_cpu_capability()


def describe_device(device: torch.device) -> str:
    """What a measurement ran on, for reports: the GPU's name, or the CPU's model name and ISA."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name = next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")),
                "CPU")
    return f"{name} ({cpu_isa()}, {torch.get_num_threads()} threads)"


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether the device multiplies bf16 matrices natively, and what it has (for the reason line).

    CPU: AMX (amx_bf16) or AVX512-BF16, the instructions oneDNN's bf16 kernels use; elsewhere bf16
    is emulated and slower than fp32. CUDA: compute capability 8.0 (Ampere) or newer.
    """
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (major, minor) >= (8, 0), f"CUDA compute capability {major}.{minor}"
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return True, "CPU with AMX"
    if "avx512_bf16" in flags:
        return True, "CPU with AVX512-BF16"
    return False, f"CPU without AMX or AVX512-BF16 ({torch.backends.cpu.get_cpu_capability()})"


def choose_precision(requested: str, device: torch.device, exported: bool = False) -> PrecisionChoice:
    """"auto": bf16 where the device runs it natively, else fp32 (the exact path); an exported graph
    (ONNX Runtime) runs as it was exported. Any other name is taken as asked."""
    if requested != choices.AUTO:
        return PrecisionChoice(requested, "asked for")
    if exported:
        return PrecisionChoice("fp32", "an exported graph runs at the precision it was exported in")
    native, what = native_bf16(device)
    return PrecisionChoice("bf16" if native else "fp32", f"auto: {what}" + (" runs bf16 natively" if native else ""))


# The layers whose weights multiply activations: cast to bf16/fp16 by cast_module (the rest stays fp32)
MATMUL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _input_to_weight_dtype(layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    dtype = layer.weight.dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _output_to_fp32(layer: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return output.float()


def cast_module(module: nn.Module, precision: str) -> nn.Module:
    """The module to run at `precision`: for fp32 the module itself; for bf16/fp16 a copy whose matmul
    layers (Linear, Conv) hold their weights in the precision's dtype, cast once, and take their input
    in it, while everything between them stays fp32.

    Why not autocast: it casts every weight again on every call (1.7-2.6x where bf16 matmuls are 6.7x
    faster than fp32, issue 20's AMX measurements). Why not the whole module in bf16: its residual
    stream is then rounded to 8 bits of mantissa at every block's two additions, and the logits too;
    a ViT-B with random weights moved 1.3% from fp32 (the target is 1%). Here a convolution (the patch
    embedding) hands back fp32, so the tokens, the residual additions, the LayerNorms and the
    embeddings added to the tokens stay fp32; a Linear's bf16 output (q, k, v, the MLP's hidden
    layer) feeds the next bf16 op as it is, so attention and the MLP's activation run in bf16; and the
    classifier keeps fp32 weights (a 768 x classes matmul, nothing to gain). The joint ViT-B: 0.8%.
    """
    if precision == "fp32":
        return module
    dtype = PRECISIONS[precision]
    cast = copy.deepcopy(module)
    head = cast.get_classifier() if hasattr(cast, "get_classifier") else None
    for layer in cast.modules():
        if isinstance(layer, MATMUL_LAYERS):
            if layer is not head:
                layer.to(dtype)
                if not isinstance(layer, nn.Linear):
                    layer.register_forward_hook(_output_to_fp32)
            layer.register_forward_pre_hook(_input_to_weight_dtype)
    return cast


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16 (training; a module that is not cast); fp32 runs without autocast."""
    choices.check_precision(precision, tuple(choices.PRECISIONS))
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the run, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Dist:
    """Join the process group when launched by torchrun: nccl on CUDA (one GPU per local rank), else gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    target = resolve_device(device)
    if world_size == 1:
        return Dist(device=target)
    if target.type == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        # Imported before init_process_group: its functions' `group=group.WORLD` defaults are evaluated at
        # import, and DDP imports it (through torch._dynamo) once the group exists; the defaults would then
        # hold the group for good and `teardown` could never free it (see there). Not at module import:
        # single-process runs (every predict) need not pay for it.
        import torch.distributed.nn as _group_world_defaults  # noqa: F401
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), device=target)


def teardown(info: Dist, finished: bool) -> None:
    """Leave and free the process group. Call it once the DDP wrapper, which also holds the group,
    is gone: destroy_process_group then drops the last reference, and the group's destructor (run
    with the GIL released) joins gloo's worker threads while the interpreter is whole.

    Left running, a worker can still be releasing the last collectives' tensors after `wait`
    returned (a barrier keeps the collectives in flight when it was queued until the barrier
    itself is destroyed); if Python is finalizing by then, the decref's GIL request ends the thread
    with pthread_exit, whose unwind through a noexcept destructor aborts the rank ("terminate
    called without an active exception", SIGABRT; pytorch/pytorch#190489) and fails the torchrun.

    A rank that finished waits at a barrier first, so none closes its connections while a peer is
    still in the run; after a failure there is no barrier: the other ranks may never reach it."""
    if not (info.enabled and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()  # the trainer may be kept alive by a reference cycle after `del`: free its DDP wrapper now
    dist.destroy_process_group()


def wrap(module: nn.Module, info: Dist) -> nn.Module:
    """DDP around the module when distributed (it averages gradients in backward), else the module."""
    if not info.enabled:
        return module
    return DistributedDataParallel(module, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def sum_across(values: torch.Tensor, info: Dist) -> torch.Tensor:
    """Element-wise sum over all processes (metric counters); a copy, on the input's device."""
    if not info.enabled:
        return values.clone()
    reduced = values.to(info.device, torch.float64)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device, values.dtype)


def merge_dicts(local: dict[str, Any], info: Dist) -> dict[str, Any]:
    """The union of one small dict per process (the undecodable videos each rank met)."""
    if not info.enabled:
        return dict(local)
    gathered: list[dict[str, Any] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, local)
    return {key: value for part in gathered for key, value in (part or {}).items()}
