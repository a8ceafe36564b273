"""Refuse a bad model config before anything is built, in one line that names the field.

A model directory's config.json comes from anywhere (a download, a hand edit, a hostile
file), and an unchecked value fails late and badly: `depth: 1000000000` grows memory for a
minute, `num_heads: 0` is a ZeroDivisionError, `embed_dim: 10**400` a C++ stack. So every
config is checked as it is made, cheapest first, each failure naming the field as
config.json spells it (`arch.depth = 1000000000 is out of range (1..1024)`):

1. `check_fields` (at construction of every family config and of `InputSpec`): each field
   has its annotated type (no strings, lists, bools or floats where an int belongs, no NaN)
   and lies in the bounds (`limits`) or vocabulary (`choices`) its class declares;
2. `check_divisible`: the divisibility the patch and attention layouts need;
3. `check_fits` (before a model is built for real): the model is first built on the meta
   device, which costs no memory, so any remaining family rule fails there; its exact weight
   size and the largest tensor of one view's forward pass give a lower bound of the memory it
   needs, and a model that cannot fit in the memory this machine has is refused.

A run that feeds a built model other clips than it was built for (`predict --frames`) checks them
with `check_view`: the tiling (`check_tiling`, which names the nearest valid counts) and the
family's other rules, by the same meta-device forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import resource
import types
import typing
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vidcls.choices import Bounds as Bounds  # re-exported, defined where InputSpec reads it
from vidcls.choices import Choices as Choices
from vidcls.errors import UsageError, VidclsError, first_line, printable
from vidcls.fileio import memo

GIB = 1 << 30


class ConfigError(VidclsError, ValueError):
    """A model config that cannot describe a working model; the message names the field.

    Also a ValueError, as the families' own checks always were for code that builds models directly."""


def show(value: Any) -> str:
    """A value as an error line may quote it: short, one line, terminal-safe."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{'-' if value < 0 else ''}1e{len(str(abs(value))) - 1} (about)"
    text = printable(repr(value))
    return text if len(text) <= 40 else f"{text[:37]}..."


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{ {int: 'integers', float: 'finite numbers'}.get(args[0], _type_name(args[0])) }"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def has_type(value: Any, hint: Any) -> bool:
    """Whether a config value has its annotated type, as JSON would give it.

    bool is not an int here and an int is a float; a float must be finite; tuple[X, ...]
    accepts a JSON list too; a list of 3 floats types mean and std.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        items = [args[0]] * len(value) if args[-1:] == (Ellipsis,) else list(args)
        return len(items) == len(value) and all(has_type(v, t) for v, t in zip(value, items, strict=True))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def check_fields(obj: Any, section: str, limits: Bounds, choices: Choices) -> None:
    """Types, bounds and vocabularies of a config dataclass's fields (see the module docstring).

    section: the config.json section the fields live in ("arch", "input"), for the message.
    A list field's bounds apply to each of its items.
    """
    hints = typing.get_type_hints(type(obj))
    for spec in fields(obj):
        value, name = getattr(obj, spec.name), f"{section}.{spec.name}"
        if not has_type(value, hints[spec.name]):
            raise ConfigError(f"{name} = {show(value)} must be {_type_name(hints[spec.name])}")
        if spec.name in choices and value not in choices[spec.name]:
            allowed = ", ".join(map(show, choices[spec.name]))
            raise ConfigError(f"{name} = {show(value)} must be one of {allowed}")
        low, high = limits.get(spec.name, (-math.inf, math.inf))
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not low <= item <= high:
                raise ConfigError(f"{name} = {show(value)} is out of range ({low:g}..{high:g})")


def is_numeric(hint: Any) -> bool:
    """Whether a field's annotation admits a number (int, float, a union or a list with one)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType, tuple):
        return any(is_numeric(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)
    return hint in (int, float)


def unbounded_fields(cls: type, limits: Bounds) -> list[str]:
    """Numeric fields of a config class without bounds (every config must bound them all)."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in fields(cls) if is_numeric(hints[f.name]) and f.name not in limits]


def check_divisible(config: Any) -> None:
    """The divisibility every family with these fields needs: heads split the width evenly,
    patches tile the frame, tubelets tile the clip."""
    rules = (("embed_dim", "num_heads"), ("img_size", "patch_size"), ("num_frames", "tubelet_size"))
    for whole, part in rules:
        if hasattr(config, whole) and hasattr(config, part) and getattr(config, whole) % getattr(config, part):
            raise ConfigError(f"arch.{whole} = {getattr(config, whole)} is not divisible by "
                              f"arch.{part} = {getattr(config, part)}")


# ---------------------------------------------------------------- memory


class LargestTensor(TorchDispatchMode):
    """Records the size of the largest tensor any operation produces (on the meta device: no memory used)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, kinds, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.bytes = max(self.bytes, leaf.numel() * leaf.element_size())
        return out


def meta_model(model_class: type[torch.nn.Module], config: Any) -> torch.nn.Module:
    """The model built on the meta device: exact shapes, no memory; a family rule the config
    breaks (its constructor's ValueError) is a ConfigError."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real build warns, not this rehearsal
        try:
            return model_class(config)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"arch: {first_line(exc)}") from None


def rehearse(module: torch.nn.Module, channels: int, frames: int, size: int) -> int:
    """Bytes of the largest tensor (the input included) of one frames x size x size view's forward
    pass on the meta device. A view the model cannot take raises its forward's ValueError or
    RuntimeError (the family's own rule); a forward pass the meta device cannot run (an operation
    without a meta kernel) leaves the estimate at the input's size."""
    view = torch.empty(1, channels, frames, size, size, device="meta")
    largest = LargestTensor()
    try:
        with warnings.catch_warnings(), torch.inference_mode(), largest:
            warnings.simplefilter("ignore")
            module.eval()(view)
    except NotImplementedError:
        pass
    return max(largest.bytes, view.numel() * view.element_size())


def largest_activation(module: torch.nn.Module, channels: int, frames: int, size: int) -> int:
    """rehearse(), with a view the model cannot take as a ConfigError naming config.json's fields."""
    try:
        return rehearse(module, channels, frames, size)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"input.frames = {frames}, input.size = {size}: the model cannot take this view "
                          f"({first_line(exc)})") from None


# ---------------------------------------------------------------- the clip a run feeds a model


def _nearest_multiples(value: int, step: int) -> list[int]:
    """The positive multiples of `step` just below and just above `value`."""
    below = value - value % step
    return [n for n in (below, below + step) if n > 0]


def check_tiling(config: Any, frames: int, size: int) -> None:
    """UsageError naming the nearest valid counts when the patch embedding cannot cut clips of
    `frames` x `size` x `size`: a tubelet embedding needs the size to be a multiple of its
    `patch_size` and the frame count one of its `tubelet_size`; a convolution patch embedding
    (ff-linear) has neither and takes any size."""
    rules = ((size, getattr(config, "patch_size", 1), "size", "patch size"),
             (frames, getattr(config, "tubelet_size", 1), "frame count", "tubelet size"))
    for value, step, what, unit in rules:
        if value % step:
            nearest = " or ".join(str(n) for n in _nearest_multiples(value, step))
            raise UsageError(f"{what} {value} is not a multiple of its {unit} {step}; nearest valid {what}: {nearest}")


def check_view(model_class: type[torch.nn.Module], config: Any, frames: int, size: int) -> None:
    """UsageError when a model built as `config` cannot take clips of `frames` x `size` x `size`:
    first the tiling (check_tiling, with the nearest valid counts), then, off the shape the model
    was built for, every other rule of its family (X-ViT's whole mixing groups, the VidTr authors'
    position tables fixed to their frame count), shown by one forward pass on the meta device: no
    memory, no weights, no video decoded. For a run to refuse what would fail on every video."""
    check_tiling(config, frames, size)
    if (frames, size) != (config.num_frames, config.img_size):
        _check_rehearsal(model_class, json.dumps(dataclasses.asdict(config), sort_keys=True), frames, size)


@functools.lru_cache(maxsize=32)
def _check_rehearsal(model_class: type[torch.nn.Module], config: str, frames: int, size: int) -> None:
    """Once per model and shape in a process (0.1-0.3 s for a ViT-B): a timeline checks each video's run."""
    built = meta_model(model_class, model_class.Config(**json.loads(config)))
    try:
        rehearse(built, built.config.in_chans, frames, size)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"the model cannot take clips of {frames} frames of {size} px: {first_line(exc)}") from None


def available_memory() -> int:
    """Bytes this process can still get: the least of free RAM (MemAvailable), its address-space
    limit (ulimit -v) and its cgroup's limit, where each is known."""
    candidates = []
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    else:
        candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        candidates.append(soft)
    cgroup = Path("/sys/fs/cgroup/memory.max")
    try:
        limit = cgroup.read_text().strip()
        if limit.isdigit():
            used = int((cgroup.parent / "memory.current").read_text())
            candidates.append(int(limit) - used)
    except OSError:
        pass
    return min(candidates)


def check_fits(model_class: type[torch.nn.Module], config: Any, frames: int, size: int,
               available: int | None = None) -> None:
    """Refuse a model whose weights, plus the largest tensor of one view's forward pass, exceed
    the memory available.

    Both are lower bounds (a batch, autograd and the allocator need more), so what is refused
    could never run; what passes may still run out of memory with a large batch. The weights
    are counted first, so a huge model is refused before its forward pass is rehearsed. The
    rehearsal (a forward pass on the meta device, whose first use imports torch's compiler stack:
    2 s) is remembered per architecture and view shape in $VIDCLS_HOME (fileio.memo).
    """
    available = available_memory() if available is None else available
    module = meta_model(model_class, config)
    params = sum(p.numel() for p in module.parameters())
    weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    need = (f"{params / 1e6:,.0f} M parameters ({weights / GIB:,.1f} GiB, "
            f"set by arch.depth, arch.embed_dim and the other sizes)")
    if weights <= available:
        key = {"model": f"{model_class.__module__}.{model_class.__qualname__}", "config": repr(config),
               "frames": frames, "size": size, "torch": torch.__version__}
        activation = int(memo("largest-activation", key,
                              lambda: largest_activation(module, config.in_chans, frames, size)))
        if weights + activation <= available:
            return
        need += (f" plus {activation / GIB:,.1f} GiB for the largest tensor of one {frames}x{size}x{size} view "
                 f"(input.frames, input.size)")
    raise ConfigError(f"the model is too large for this machine: {need} need more than the "
                      f"{available / GIB:,.1f} GiB of memory available")
