"""What a training run keeps in its output directory, written so that a crash never loses it.

    DIR/config.json, DIR/model.safetensors   the best weights so far (by val top-1): DIR is a
                                            vidcls model directory, `vidcls predict --model DIR`
    DIR/last/                               the latest state, replaced as a whole: config.json and
                                            model.safetensors (itself loadable) + trainer_state.pt
    DIR/metrics.jsonl, DIR/train.log        written by RunLog
    DIR/.train.lock, DIR/.train.pid         held by the running `vidcls train` (one run per DIR)

trainer_state.pt holds only tensors, numbers, strings and containers of them (optimizer,
scheduler and grad-scaler state, RNG state, epoch and step), read back with
torch.load(weights_only=True): nothing in it is ever unpickled as code.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file
from torch import nn

from vidcls.errors import UsageError, VidclsError, first_line, printable, unreadable_reason
from vidcls.fileio import atomic_directory, atomic_file, leftovers, write_text_atomic
from vidcls.train.log import LOG_NAME, METRICS_NAME, run_writes
from vidcls.zoo.cards import read_card
from vidcls.zoo.modeldir import (
    CONFIG_NAME,
    LAST,
    WEIGHTS_NAME,
    ModelCard,
    write_config,
    write_weights,
)

STATE_NAME = "trainer_state.pt"
LOCK_NAME, PID_NAME = ".train.lock", ".train.pid"
# what restore() reads from a trainer state; a file without them is not one vidcls wrote
STATE_KEYS = ("epoch", "step", "optimizer", "scheduler", "scaler", "rng", "train_sums", "best_top1", "best_epoch",
              "skipped", "seconds", "config")


@contextlib.contextmanager
def run_lock(output: Path) -> Iterator[None]:
    """Hold DIR for one `vidcls train`: a second one on the same DIR is a usage error naming the
    first's pid (two runs would interleave metrics.jsonl and overwrite each other's checkpoints).

    The lock is filelock's (an OS lock, released when the process dies, even by kill -9); the
    pid is written beside it because filelock truncates the lock file on every attempt.
    """
    with run_writes(output, "the run directory"):
        output.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # a TimeoutError, so an OSError: outside run_writes
        try:
            pid = (output / PID_NAME).read_text().strip()
        except OSError:
            pid = "unknown"
        raise UsageError(f"{printable(output)} is in use by another `vidcls train` (pid {printable(pid)}); "
                         f"wait for it to end or choose another --output") from None
    try:
        with run_writes(output, PID_NAME):
            write_text_atomic(output / PID_NAME, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            (output / PID_NAME).unlink()
        lock.release()


def recover(output: Path) -> None:
    """Repair what a killed run left in DIR (call under run_lock, so no writer is running).

    A crash between atomic_directory's two renames leaves the previous checkpoint as
    `.last.old` without `last/`: it is put back. Then the temporary files and folders of
    interrupted writes (`.last.*`, `.model.*.tmp.safetensors`, ...) are deleted.
    """
    last, kept = output / LAST, output / f".{LAST}.old"
    if not last.exists() and (kept / STATE_NAME).is_file():
        os.replace(kept, last)
    for target in (last, output / CONFIG_NAME, output / WEIGHTS_NAME, output / METRICS_NAME):
        for path in leftovers(target):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def never_checkpointed(output: Path) -> bool:
    """Whether DIR holds a run that was killed before its first checkpoint: it has a train.log
    but no last/, so nothing can resume it and its files (a best model of epoch 1, a metrics
    row) are a start to redo, not a model to protect."""
    return (output / LOG_NAME).is_file() and not (output / LAST).exists()


def start_over(output: Path) -> list[str]:
    """Delete the run files of a run that never checkpointed; returns their names."""
    names = run_files(output)
    for name in names:
        (output / name).unlink()
    return names


def write_model_files(directory: Path, card: ModelCard, module: nn.Module, run: Path | None = None,
                      place: str = "") -> None:
    """config.json + model.safetensors into an existing directory, each file replaced atomically.

    Unlike zoo.save_model_dir this leaves the rest of the directory alone (the run's logs
    and `last/` live next to the best weights). A write that fails is one line naming the run
    directory (`run`, default `directory`) and the file (`place` + its name; run_writes).
    """
    with atomic_file(directory / CONFIG_NAME) as tmp, run_writes(run or directory, place + CONFIG_NAME):
        write_config(tmp, card)
    with atomic_file(directory / WEIGHTS_NAME) as tmp, run_writes(run or directory, place + WEIGHTS_NAME):
        write_weights(tmp, module)


def save_last(output: Path, card: ModelCard, module: nn.Module, state: dict[str, Any]) -> None:
    """Replace DIR/last as a whole: weights and trainer state always belong to the same step.
    A write that fails (a full disk) leaves the previous DIR/last as it was, its temporary copy removed."""
    with atomic_directory(output / LAST) as tmp:
        write_model_files(tmp, card, module, run=output, place=f"{LAST}/")
        with run_writes(output, f"{LAST}/{STATE_NAME}"):
            torch.save(state, tmp / STATE_NAME)


def run_files(output: Path) -> list[str]:
    """What a previous run (or another model) left in `output` that a new run would overwrite.

    Anything else, such as the train.log of a run that stopped before its first epoch, may stay.
    """
    return [name for name in (CONFIG_NAME, WEIGHTS_NAME, LAST, METRICS_NAME) if (output / name).exists()]


def last_directory(output: Path) -> Path | None:
    """DIR/last, or the previous one that atomic_directory set aside if a crash hit between its renames
    (recover() puts it back; this also finds it for a reader that holds no lock)."""
    for candidate in (output / LAST, output / f".{LAST}.old"):
        if (candidate / STATE_NAME).is_file():
            return candidate
    return None


def load_last(output: Path) -> tuple[ModelCard, dict[str, torch.Tensor], dict[str, Any]]:
    """(card, weights, trainer state) of the checkpoint to resume from."""
    directory = last_directory(output)
    if directory is None:
        raise UsageError(f"nothing to resume: {output} has no {LAST}/{STATE_NAME} "
                         f"(start a new run without --resume)")
    try:
        weights = load_file(str(directory / WEIGHTS_NAME))
        state = torch.load(directory / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, the report is one line
        raise VidclsError(f"{printable(directory)}: unreadable checkpoint ({unreadable_reason(exc)}); "
                          f"start a new run without --resume") from None
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise VidclsError(f"{printable(directory / STATE_NAME)}: not a trainer state vidcls wrote (no "
                          f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); "
                          f"start a new run without --resume")
    problem = state_problem(state)
    if problem:
        raise VidclsError(f"{printable(directory / STATE_NAME)}: {printable(problem)}; the run cannot be resumed "
                          f"exactly: start a new run without --resume")
    return read_card(directory), weights, state


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def state_problem(state: dict[str, Any]) -> str | None:
    """What makes a trainer state one this run cannot continue exactly, or None.

    torch.load(weights_only=True) guarantees plain data, not sane data: an edited or damaged file
    could say `epoch: "two"` (a crash deep in the loop), `epoch: -3` (epochs trained again) or hold
    an RNG state the generator rejects only when it is used (or never, at an epoch boundary).
    """
    config = state["config"]
    planned = config.get("epochs") if isinstance(config, dict) else None
    if not _count(planned) or not planned:
        return f"config.epochs = {planned!r} is not a number of epochs"
    before = config.get("attention_epochs", 0)  # distillation's first stage, counted in its epochs too
    if not _count(before):
        return f"config.attention_epochs = {before!r} is not a number of epochs"
    planned += before
    for key in ("epoch", "step", "best_epoch"):
        if not _count(state[key]):
            return f"{key} = {state[key]!r} is not a count (an integer >= 0)"
    if state["epoch"] > planned or state["best_epoch"] > state["epoch"]:
        return (f"epoch {state['epoch']} (best {state['best_epoch']}) is not within the {planned} epochs "
                f"the run planned")
    if not _number(state["best_top1"]) or not -1 <= state["best_top1"] <= 1:
        return f"best_top1 = {state['best_top1']!r} is not an accuracy"
    if not _number(state["seconds"]) or state["seconds"] < 0:
        return f"seconds = {state['seconds']!r} is not a duration"
    sums = state["train_sums"]
    if not (isinstance(sums, list) and len(sums) == 2 and all(_number(v) and v >= 0 for v in sums)):
        return "train_sums is not a pair of finite sums"
    rng = state["rng"]
    try:
        torch.Generator().set_state(rng)  # the CPU generator checks its size and its mt19937 state
    except (TypeError, RuntimeError) as exc:
        return f"rng is not a random generator state ({first_line(exc)})"
    return None
