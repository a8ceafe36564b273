"""Where a training run reports: console lines, live progress bars, DIR/train.log and DIR/metrics.jsonl,
and how it reports a file it cannot write into DIR (`run_writes`: one line, whatever the writer raised).

Only the main process (rank 0) reports; on the other ranks every method is a no-op, so the
loop calls them unconditionally.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors import SafetensorError

from vidcls.errors import VidclsError, printable
from vidcls.fileio import append_whole, write_failure, write_text_atomic
from vidcls.zoo.modeldir import LAST

LOG_NAME = "train.log"
METRICS_NAME = "metrics.jsonl"
STALL_EPOCHS = 3  # epochs at chance before the run says the model is not learning
STALL_TOLERANCE = 0.02  # of ln(classes): how close to chance a loss counts as at chance


@contextmanager
def run_writes(output: Path, what: str) -> Iterator[None]:
    """A write into the run directory that fails ends the run in one line naming DIR, the file, the cause
    (a full disk said as such) and what is kept, not as an internal error in torch's or safetensors' words.

    Checkpoints, best weights and metrics are written whole or not at all, so the last checkpoint is
    intact and `--resume` continues from it once there is space. Use it inside an atomic write's block
    (write_failure measures the free space before the temporary files are removed). Here rather than in
    `checkpoint`, which imports this module: train.log and metrics.jsonl are written here.
    """
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:  # torch.save: RuntimeError; safetensors: its own
        why = write_failure(exc, output)
        fix = "free some space and " if why.startswith("the disk is full") else ""
        then = (f"the run's last checkpoint (last/) is kept: {fix}continue with --resume" if (output / LAST).is_dir()
                else f"no checkpoint yet: {fix}start the run again")
        raise VidclsError(f"{printable(output)}: cannot write {what}: {why}; {then}") from None


def at_chance(losses: Sequence[float], classes: int) -> bool:
    """Whether the last STALL_EPOCHS train losses all sit at ln(classes), the cross-entropy of a
    uniform guess (label smoothing does not move it): the model has learnt nothing yet."""
    chance = math.log(classes)
    recent = losses[-STALL_EPOCHS:]
    return len(recent) == STALL_EPOCHS and all(abs(loss - chance) <= STALL_TOLERANCE * chance for loss in recent)


def stall_hint(losses: Sequence[float], classes: int, config: Any) -> str | None:
    """The warning for a run whose loss has just spent STALL_EPOCHS epochs at chance (once, not every
    epoch after), with what usually gets a small model going; None otherwise."""
    if not at_chance(losses, classes) or at_chance(losses[:-1], classes):
        return None
    return (f"train loss has stayed at ln({classes}) = {math.log(classes):.3f}, a uniform guess, for "
            f"{STALL_EPOCHS} epochs: the model is not learning. Try another --lr (now {config.learning_rate:g}; "
            f"a tiny model often needs 1e-3), more --epochs, and check the data: --no-flip if the labels name "
            f"a direction, and that the classes differ in what their clips show")


class RunLog:
    """Console + log file + metrics file of one run (see the module docstring)."""

    def __init__(self, output: Path, enabled: bool = True, progress: bool = True,
                 console: Console | None = None) -> None:
        self.output, self.enabled, self.show_progress = Path(output), enabled, progress
        self.console = console or Console(stderr=True)

    # ---------------------------------------------------------------- messages

    def info(self, message: str) -> None:
        self._emit("INFO", message, escape(printable(message)))

    def warn(self, message: str) -> None:
        self._emit("WARNING", message, f"[yellow]warning:[/] {escape(printable(message))}")

    def _emit(self, level: str, message: str, styled: str) -> None:
        if not self.enabled:
            return
        self.console.print(styled, highlight=False, soft_wrap=True)
        with run_writes(self.output, LOG_NAME):
            self.output.mkdir(parents=True, exist_ok=True)
            append_whole(self.output / LOG_NAME, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {level} {message}\n")

    # ---------------------------------------------------------------- metrics.jsonl

    def add_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row (flushed at once, so a killed run keeps its curve)."""
        if self.enabled:
            with run_writes(self.output, METRICS_NAME):
                append_whole(self.output / METRICS_NAME, json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.output / METRICS_NAME
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def keep_metrics_until(self, epochs_done: int) -> list[dict[str, Any]]:
        """On resume, drop rows of epochs after the checkpoint (they will be run again); return the rest."""
        rows = [row for row in self.read_metrics() if row["epoch"] <= epochs_done]
        if self.enabled:
            with run_writes(self.output, METRICS_NAME):
                write_text_atomic(self.output / METRICS_NAME, "".join(json.dumps(row) + "\n" for row in rows))
        return rows

    # ---------------------------------------------------------------- progress

    @contextmanager
    def progress(self) -> Iterator[Bars]:
        """Live bars: one per epoch (step, loss, lr, clips/s), one transient for validation."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn())
        bars = Progress(*columns, console=self.console, disable=not (self.enabled and self.show_progress))
        with bars:
            yield Bars(bars)


class Bars:
    """The handles the loop updates while it runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.transient = False

    def start(self, description: str, total: int, done: int = 0, transient: bool = False) -> None:
        self.finish()
        self.task = self.progress.add_task(description, total=total, completed=done, status="")
        self.transient = transient

    def update(self, done: int, status: str = "") -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=done, status=status)

    def finish(self) -> None:
        if self.task is not None and self.transient:
            self.progress.remove_task(self.task)
        self.task = None
