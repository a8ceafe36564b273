"""What a training run depends on (`TrainConfig`, validated), how it ended (`TrainResult`), and the
pure pieces of its plan: the learning-rate schedule and which options a --resume may change.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcls.choices import INFLATIONS, OPTIMIZERS, check_precision
from vidcls.errors import UsageError

# Options that may change between a run and its --resume: those that do not change the result (the run
# directory's own place among them: `mv runs/a runs/b` resumes from runs/b), and --epochs, which extends
# (or shortens) the plan: Trainer.plan_schedule re-plans the decay.
RESUME_MAY_CHANGE = frozenset({"resume", "workers", "device", "compile", "progress", "init", "inflate", "epochs",
                               "grad_checkpointing", "report_frames", "threads", "output"})
DATA_PATHS = ("train", "val")  # the same data at another path when it moved with the run directory


@dataclass
class TrainConfig:
    """Everything a training run depends on (the options of `vidcls train`)."""

    model: str
    train: Path
    val: Path
    output: Path
    epochs: int = 10
    batch_size: int = 8  # clips per process and step; the effective batch is x processes x accumulate
    lr: float | None = None  # None: the optimizer's default (OPTIMIZERS)
    optimizer: str = "adamw"
    weight_decay: float | None = None  # None: the optimizer's default
    momentum: float = 0.9  # SGD only
    warmup_epochs: float = 1.0  # at most half the run
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max gradient norm; 0 turns clipping off
    accumulate: int = 1
    precision: str = "fp32"
    compile: bool = False
    grad_checkpointing: bool = False  # recompute block activations in the backward pass: less memory, same result
    init: str | None = None  # None: --model's own weights if it has any; "none"; "imagenet"; a REF
    inflate: str = "central"  # --init imagenet: patch kernel on the central frame, or averaged over the tubelet
    resume: bool = False
    workers: int | None = None  # DataLoader processes; None: as predict chooses them (inference.engine.default_workers)
    threads: int | None = None  # torch threads of the training process; None: as predict chooses them
    device: str = "auto"
    seed: int = 0
    flip: bool = True
    shuffle_frames: bool = False
    scale: tuple[float, float] = (1.0, 1.25)
    max_bad_fraction: float = 0.05
    progress: bool = True

    def __post_init__(self) -> None:
        self.train, self.val, self.output = Path(self.train), Path(self.val), Path(self.output)
        self.scale = tuple(self.scale)
        checks = [(self.epochs >= 1, "--epochs must be >= 1"), (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (self.accumulate >= 1, "--accumulate must be >= 1"),
                  (self.workers is None or self.workers >= 0, "--workers must be >= 0"),
                  (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
                  (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
                  (self.inflate in INFLATIONS, f"--inflate must be one of {', '.join(INFLATIONS)}"),
                  (self.lr is None or 0 < self.lr <= 10, "--lr must be in (0, 10]"),
                  (self.weight_decay is None or 0 <= self.weight_decay <= 10, "--weight-decay must be in [0, 10]"),
                  (0 <= self.warmup_epochs < math.inf, "--warmup-epochs must be a finite number >= 0"),
                  (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
                  (self.clip_grad >= 0, "--clip-grad must be >= 0"),
                  (0 <= self.max_bad_fraction <= 1, "--max-bad-fraction must be in [0, 1]"),
                  (0 < self.scale[0] <= self.scale[1], "scale jitter must be 0 < low <= high")]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        check_precision(self.precision)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer][0]

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else OPTIMIZERS[self.optimizer][1]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths made absolute) for the checkpoint and the --resume comparison."""
        values = dataclasses.asdict(self)
        for key in ("train", "val", "output"):
            values[key] = str(Path(values[key]).expanduser().resolve())
        values["scale"] = list(values["scale"])
        return values


@dataclass
class DistillConfig(TrainConfig):
    """The options of `vidcls distill` (vidcls.train.distill): `model` is the student REF (an ff-linear
    zoo entry: it gives the attention variant, the teacher the sizes), `train` the videos DATA, `val`
    the held-out videos (the same path as `train`: a `holdout` share of DATA, never trained on),
    `epochs` the distillation stage's epochs, after `attention_epochs` of attention transfer."""

    # the defaults measured on demo-motion -> ff-linear (README: Getting ff-linear weights)
    epochs: int = 12
    batch_size: int = 16
    lr: float | None = 1e-3
    teacher: str = ""
    attention_epochs: int = 2
    attention_lr: float | None = None  # None: --lr
    temperature: float = 2.0
    label_weight: float = 0.0  # share of the cross-entropy on DATA's labels in the distillation loss
    holdout: float = 0.1
    cache_teacher: bool = False
    report_frames: tuple[int, ...] = ()  # clip lengths of the cost comparison; () = 1, 4 and 16 x the teacher's

    def __post_init__(self) -> None:
        super().__post_init__()
        self.report_frames = tuple(self.report_frames)
        checks = [(bool(self.teacher), "--teacher is required"),
                  (self.attention_epochs >= 0, "--attention-epochs must be >= 0"),
                  (self.attention_lr is None or self.attention_lr > 0, "--attention-lr must be > 0"),
                  (self.temperature > 0, "--temperature must be > 0"),
                  (0 <= self.label_weight <= 1, "--label-weight must be in [0, 1]"),
                  (0 < self.holdout < 1, "--holdout must be in (0, 1)"),
                  (all(int(n) >= 1 for n in self.report_frames), "--report-frames must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["report_frames"] = list(values["report_frames"])
        return values

    @property
    def holds_out(self) -> bool:
        """Whether the held-out videos are a share of DATA (no separate --val)."""
        return self.val.expanduser().resolve() == self.train.expanduser().resolve()


@dataclass
class TrainResult:
    """How a run ended: the metrics curve, the best epoch, and what was skipped."""

    output: Path
    classes: list[str]
    history: list[dict[str, Any]]
    best_top1: float
    best_epoch: int
    skipped: dict[str, str]  # undecodable video -> reason (train and val)
    seconds: float
    interrupted: str | None = None  # signal name when stopped by SIGINT / SIGTERM


# ----------------------------------------------------------------------------- pure pieces


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based).

    Linear warm-up over `warmup` steps (avoids large early updates that wreck pretrained
    weights), then a cosine decay to zero at `total`.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def schedule_steps(epochs: int, warmup_epochs: float, updates_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, total optimizer steps) of a run; the warm-up is at most half the run,
    so a short run still decays."""
    total = epochs * updates_per_epoch
    return min(round(warmup_epochs * updates_per_epoch), total // 2), total


def epochs_started(state: dict[str, Any]) -> int:
    """Epochs a checkpointed run has finished, plus the one it stopped in, if any."""
    return state["epoch"] + (1 if state["step"] else 0)


def changed_options(saved: dict[str, Any], current: dict[str, Any],
                    may_change: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
    """Options that differ from the checkpointed run's and would change the result.

    A data path counts as unchanged at the same place relative to the run directory: a project folder
    moved as a whole (`mv proj proj2`, data and runs inside) holds the same data under a new absolute path.
    """
    return [f"--{key.replace('_', '-')} (was {saved.get(key)!r}, now {value!r})" for key, value in current.items()
            if key not in may_change and saved.get(key) != value
            and not (key in DATA_PATHS and _from_run(saved, key) == _from_run(current, key) is not None)]


def _from_run(values: dict[str, Any], key: str) -> str | None:
    """Where a data path of a run's options lies relative to its run directory (None if it cannot say:
    a checkpoint's values are not trusted to be strings, and Windows has no path between drives)."""
    try:
        return os.path.relpath(values[key], values["output"])
    except (KeyError, TypeError, ValueError):
        return None


def summary_line(result: TrainResult) -> str:
    skipped = f"; {len(result.skipped)} undecodable video(s) skipped, listed in {result.output / 'train.log'}" \
        if result.skipped else ""
    return (f"done in {result.seconds:.0f}s: best val top-1 {100 * result.best_top1:.1f}% at epoch "
            f"{result.best_epoch}, saved in {result.output}{skipped}")
