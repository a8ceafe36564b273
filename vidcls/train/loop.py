"""The training loop: fine-tune a model on videos, evaluate, checkpoint, resume exactly, stop on signals.

train(TrainConfig(...)) is what `vidcls train` runs. Per epoch: train on random clips
(one optimizer step per `accumulate` batches, cosine schedule with linear warm-up), then
evaluate with the model's test-time views, append a metrics row, keep the best weights by
val top-1 and replace DIR/last. Everything random is derived from (seed, epoch, sample) or saved in
DIR/last, so a resumed run ends with the weights of one that never stopped (on CPU, where kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidcls import devices as distributed
from vidcls.bench.cost import view_gmacs
from vidcls.bench.timing import cpu_threads
from vidcls.devices import Dist, autocast_context
from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.inference.engine import default_threads, default_workers
from vidcls.models import build_model
from vidcls.train import checkpoint as ckpt
from vidcls.train.config import (
    RESUME_MAY_CHANGE,
    TrainConfig,
    TrainResult,
    changed_options,
    epochs_started,
    lr_factor,
    schedule_steps,
    summary_line,
)
from vidcls.train.data import (
    Batch,
    EpochSampler,
    VideoClipDataset,
    class_list,
    derive_seed,
    label_indices,
    make_loader,
    read_samples,
    record_failures,
)
from vidcls.train.log import Bars, RunLog, stall_hint
from vidcls.train.optim import make_optimizer, parameter_groups, seed_everything  # noqa: F401 - re-exported
from vidcls.train.stop import GracefulStop
from vidcls.train.validation import train_means, val_sums, view_probs
from vidcls.train.weights import starting_model
from vidcls.zoo.modeldir import LAST, WEIGHTS_NAME, load_strict


class Trainer:
    """One run's model, optimizer, data and progress; `run()` trains to the end or to a signal.
    Distillation (vidcls.train.distill) overrides prepare, start_optimization, compute_loss, evaluate, ..."""

    best_metric = "val_top1"  # the metrics row's key that picks the best weights (see improves)

    def __init__(self, config: TrainConfig, info: Dist, log: RunLog) -> None:
        self.config, self.info, self.log = config, info, log
        c = config
        self.epochs = c.epochs
        self.train_set, self.val_set, resume_state = self.prepare()
        spec = self.card.input
        self.sampler = EpochSampler(len(self.train_set), info.rank, info.world_size, c.seed)
        pin = info.device.type == "cuda"
        # predict's choice: a cheap model on CPU one per core, a heavy one a quarter of them, CUDA all but two
        workers = default_workers(info.device, view_gmacs(self.card)) if c.workers is None else c.workers
        self.train_loader = make_loader(self.train_set, c.batch_size, self.sampler, workers, pin)
        val_share = range(info.rank, len(self.val_set), info.world_size)  # no padding: exact metrics
        self.val_loader = make_loader(self.val_set, c.batch_size, val_share, workers, pin)
        self.steps_per_epoch = math.ceil(len(self.sampler.inner) / c.batch_size)
        self.updates_per_epoch = math.ceil(self.steps_per_epoch / c.accumulate)
        self.net.to(info.device)
        self.net.set_grad_checkpointing(c.grad_checkpointing)
        self.start_optimization(resume_state)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=c.precision == "fp16")
        self.placeholder = torch.zeros(1, 3, spec.frames, spec.size, spec.size)
        self.epoch, self.step = 0, 0
        self.train_sums = torch.zeros(2, dtype=torch.float64)  # loss x clips, clips of this epoch
        self.best_top1, self.best_epoch = -1.0, 0
        self.skipped: dict[str, dict[str, str]] = {"train": {}, "val": {}}
        self.seconds, self.train_seconds = 0.0, 0.0  # whole run; training part of this epoch
        self.stop = GracefulStop()
        self.history: list[dict[str, Any]] = []
        if resume_state is not None:
            self.restore(resume_state)

    # ---------------------------------------------------------------- setup

    def prepare(self) -> tuple[VideoClipDataset, VideoClipDataset, dict[str, Any] | None]:
        """Read the data, build the model (start_run), and return the training and validation
        datasets and the trainer state to resume from (None for a new run)."""
        c = self.config
        train_samples = read_samples(c.train)
        classes = class_list(s.label for s in train_samples)
        if len(classes) < 2:
            raise VidclsError(f"{c.train}: training data needs at least 2 classes, found {classes}")
        val_samples = read_samples(c.val)
        label_indices(val_samples, classes, "--val")  # only the training classes, refused before any model
        seed_everything(c.seed)  # the new head's (or the whole model's) initialisation
        resume_state = self.start_run(classes)
        spec = self.card.input
        options = dict(seed=c.seed, flip=c.flip, shuffle_frames=c.shuffle_frames, scale=c.scale)
        # indices by name into the head's labels: the data's classes, or the model's own when its head was kept
        train_labels = label_indices(train_samples, self.card.labels, "--train")
        val_labels = label_indices(val_samples, self.card.labels, "--val")
        return (VideoClipDataset([s.path for s in train_samples], train_labels, spec, train=True, **options),
                VideoClipDataset([s.path for s in val_samples], val_labels, spec, train=False, **options),
                resume_state)

    def start_optimization(self, resume_state: dict[str, Any] | None) -> None:
        """The learning-rate plan, the (DDP-wrapped, compiled) model to call, its optimizer and scheduler."""
        c = self.config
        self.warmup_steps, self.total_steps = self.plan_schedule(resume_state)
        self.model = distributed.wrap(self.net, self.info)
        if c.compile:
            self.model = torch.compile(self.model)
        self.optimizer = make_optimizer(c, self.net)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.warmup_steps, self.total_steps))

    def resume_last(self, may_change: frozenset[str] = RESUME_MAY_CHANGE) -> dict[str, Any]:
        """--resume: the model of DIR/last (card and weights) and its trainer state, refused when an option
        that changes the result (not in `may_change`) differs from the run's."""
        c = self.config
        self.card, weights, state = ckpt.load_last(c.output)
        changed = changed_options(state["config"], c.to_dict(), may_change)
        if changed:
            raise UsageError(f"--resume with different options: {', '.join(changed)}; rerun with the original ones")
        self.net = build_model(self.card.family, self.card.arch, frames=self.card.input.frames,
                               size=self.card.input.size)
        load_strict(self.net, weights, str(c.output / LAST / WEIGHTS_NAME))
        return state

    def start_run(self, classes: list[str]) -> dict[str, Any] | None:
        """Build the model: from DIR/last on --resume (returning its trainer state), else from --model and --init."""
        c = self.config
        if c.resume:
            state = self.resume_last()
            if not set(classes) <= set(self.card.labels):
                raise VidclsError(f"--resume: the training data's classes {classes} are not all among the "
                                  f"checkpoint's {self.card.labels}")
            if c.epochs < epochs_started(state):
                raise UsageError(f"--epochs {c.epochs} is fewer than the {epochs_started(state)} epochs the run in "
                                 f"{c.output} has already started; pass --epochs {epochs_started(state)} or more")
            return state
        self.check_new_output()
        start = starting_model(c.model, c.init, classes, name=c.output.name, inflate=c.inflate)
        self.card, self.net = start.card, start.module
        self.log.info(f"training {start.card.family} model {c.model!r} on {len(classes)} classes "
                      f"from {start.origin}")
        return None

    def check_new_output(self) -> None:
        """A new run may not overwrite a run or a model in DIR; one killed before its first checkpoint is cleared."""
        c = self.config
        if self.info.is_main and ckpt.never_checkpointed(c.output) and ckpt.run_files(c.output):
            self.log.info(f"starting over: the run in {c.output} was stopped before its first checkpoint "
                          f"(removed {', '.join(ckpt.start_over(c.output))})")
        existing = ckpt.run_files(c.output) if self.info.is_main else []
        if existing:
            raise UsageError(f"{c.output} already holds a run or a model ({', '.join(existing)}); pass --resume "
                             f"to continue the run in it, or choose a new --output")

    def plan_schedule(self, resume_state: dict[str, Any] | None) -> tuple[int, int]:
        """(warm-up steps, total steps) of the learning-rate schedule.

        A resumed run keeps its warm-up. When --resume changes --epochs, the cosine decay is
        re-planned to reach zero at the new end: from the current step on, the learning rate
        follows the curve a run started with the new --epochs would follow (so extending a
        finished run raises it again from zero to that curve's value).
        """
        c = self.config
        warmup, total = schedule_steps(c.epochs, c.warmup_epochs, self.updates_per_epoch)
        if resume_state is None:
            return warmup, total
        planned = resume_state["config"]["epochs"]
        # checkpoints from before warmup_steps was saved: the warm-up their options gave
        warmup = resume_state.get("warmup_steps",
                                  schedule_steps(planned, c.warmup_epochs, self.updates_per_epoch)[0])
        if planned != c.epochs:
            step, old_total = resume_state["scheduler"]["last_epoch"], planned * self.updates_per_epoch
            self.log.info(f"--epochs {planned} -> {c.epochs}: learning-rate schedule re-planned: warm-up "
                          f"unchanged ({warmup} steps), cosine decay to zero at step {total} instead of "
                          f"{old_total}; the lr at step {step} becomes "
                          f"{c.learning_rate * lr_factor(step, warmup, total):.3g} (was "
                          f"{c.learning_rate * lr_factor(step, warmup, old_total):.3g})")
        return warmup, total

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a trainer state; one that does not fit this run is a one-line error."""
        try:
            self.restore_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise VidclsError(f"{self.config.output / LAST}: the checkpoint does not fit this run "
                              f"({type(exc).__name__}: {first_line(exc)}); start a new run without --resume") from None

    def restore_state(self, state: dict[str, Any]) -> None:
        if state["step"] >= self.steps_per_epoch:
            raise ValueError(f"step {state['step']} of an epoch of {self.steps_per_epoch} steps")
        self.epoch, self.step = state["epoch"], state["step"]
        self.restore_optimization(state)
        self.scaler.load_state_dict(state["scaler"])
        self.train_sums = torch.tensor(state["train_sums"], dtype=torch.float64)
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]
        self.skipped, self.seconds = state["skipped"], state["seconds"]
        if self.step:  # mid-epoch: continue the interrupted random stream (epoch starts reseed)
            torch.set_rng_state(state["rng"])
            if self.info.device.type == "cuda" and state["cuda_rng"] is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], self.info.device)
        self.history = self.log.keep_metrics_until(self.epoch)
        self.log.info(f"resumed from {self.config.output / 'last'} at epoch {self.epoch + 1}, "
                      f"step {self.step}/{self.steps_per_epoch}")

    def restore_optimization(self, state: dict[str, Any]) -> None:
        """Optimizer and scheduler state, and the lr of the next step from the schedule as (re-)planned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * lr_factor(self.scheduler.last_epoch, self.warmup_steps, self.total_steps)

    def state(self) -> dict[str, Any]:
        cuda = self.info.device.type == "cuda"
        return {"epoch": self.epoch, "step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.info.device) if cuda else None,
                "train_sums": self.train_sums.tolist(), "best_top1": self.best_top1,
                "best_epoch": self.best_epoch, "skipped": self.skipped, "seconds": self.seconds,
                "warmup_steps": self.warmup_steps, "config": self.config.to_dict()}

    def save(self) -> None:
        if self.info.is_main:
            ckpt.save_last(self.config.output, self.card, self.net, self.state())

    # ---------------------------------------------------------------- the run

    def run(self) -> TrainResult:
        c = self.config
        if self.info.is_main:
            c.output.mkdir(parents=True, exist_ok=True)
        with self.stop, self.log.progress() as bars:
            while self.epoch < self.epochs:
                began = time.perf_counter()
                if self.step < self.steps_per_epoch:
                    self.train_epoch(bars)
                metrics = None if self.stop.requested else self.evaluate(bars)
                self.seconds += time.perf_counter() - began
                if self.stop.requested:
                    self.save()
                    self.log.info(f"stopped by {self.stop.requested}: saved {c.output / 'last'} "
                                  f"(epoch {self.epoch + 1}, step {self.step}/{self.steps_per_epoch}); "
                                  f"continue with --resume")
                    return self.result()
                self.end_epoch(metrics, time.perf_counter() - began)
        return self.result()

    def train_epoch(self, bars: Bars) -> None:
        """Train from self.step to the end of the epoch, or to a stop request after an optimizer step."""
        c, epoch = self.config, self.epoch
        if self.step == 0:
            seed_everything(derive_seed(c.seed, epoch, self.info.rank, 1))
            self.train_sums.zero_()
            self.train_seconds = 0.0
        self.sampler.set_position(epoch, self.step * c.batch_size)
        self.train_set.set_epoch(epoch)
        self.model.train()
        bars.start(f"epoch {epoch + 1}/{self.epochs}", self.steps_per_epoch, self.step)
        began, clips = time.perf_counter(), 0
        for step, batch in enumerate(self.train_loader, start=self.step):
            self.note_failures(self.train_set, "train", batch.failures)
            loss, n = self.train_step(batch, step)
            self.train_sums += torch.tensor([loss * n, n], dtype=torch.float64)
            self.step, clips = step + 1, clips + n
            speed = clips / max(1e-9, time.perf_counter() - began)
            bars.update(self.step, f"loss {self.train_sums[0] / max(1, self.train_sums[1]):.4f}  "
                                   f"lr {self.scheduler.get_last_lr()[0]:.2e}  {speed:.1f} clips/s")
            if self.stop.requested and self.updated_at(self.step):
                break
        self.train_seconds += time.perf_counter() - began

    def updated_at(self, step: int) -> bool:
        """Whether an optimizer step happened after `step` batches of the epoch."""
        return step % self.config.accumulate == 0 or step == self.steps_per_epoch

    def train_step(self, batch: Batch, step: int) -> tuple[float, int]:
        """Forward and backward one batch; an optimizer step at the end of each accumulation group.

        A batch whose every video failed still runs, on a dummy clip with zero loss weight:
        under DDP all processes must take part in every gradient all-reduce.
        """
        c = self.config
        first = step - step % c.accumulate
        group = min(c.accumulate, self.steps_per_epoch - first)  # the last group may be short
        videos, labels, weight = batch.videos, batch.labels, 1.0
        if videos is None:
            videos, labels, weight = self.placeholder, torch.zeros(1, dtype=torch.long), 0.0
        sync = self.updated_at(step + 1) or not self.info.enabled
        with contextlib.nullcontext() if sync else self.model.no_sync():
            loss = self.compute_loss(videos, labels)
            self.scaler.scale(loss * (weight / group)).backward()
        if self.updated_at(step + 1):
            self.optimizer_step()
        return loss.item(), int(weight) * len(labels)

    def compute_loss(self, videos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's loss (a float32 scalar): cross-entropy of the model's logits, label-smoothed.
        videos is on the CPU, or is self.placeholder for a batch whose every video failed."""
        device = self.info.device
        with autocast_context(device, self.config.precision):
            logits = self.model(videos.to(device, non_blocking=True))
        return F.cross_entropy(logits.float(), labels.to(device), label_smoothing=self.config.label_smoothing)

    def optimizer_step(self) -> None:
        if self.config.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    @torch.no_grad()
    def evaluate(self, bars: Bars) -> dict[str, float] | None:
        """Val loss, top-1 and top-5 of the softmax averaged over each video's test views.

        None when a stop was requested part-way (the run resumes at this evaluation).
        """
        classes = len(self.card.labels)

        def batch_sums(videos: torch.Tensor, labels: torch.Tensor) -> list[float]:
            labels, probs = labels.to(videos.device), view_probs(self.net, videos, self.config.precision)
            top = probs.topk(min(5, classes), dim=-1).indices
            return [F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item(),
                    (top[:, 0] == labels).sum().item(), (top == labels[:, None]).any(-1).sum().item(), len(labels)]

        sums = val_sums(self, bars, "validating", 4, batch_sums)  # loss, top-1 hits, top-5 hits, videos
        if sums is None:
            return None
        (loss, top1, top5, videos), (train_loss, train_clips) = sums, train_means(self)
        return {"train_loss": train_loss, "val_loss": loss / videos, "val_top1": top1 / videos,
                "val_top5": top5 / videos, "train_clips": train_clips}

    def end_epoch(self, metrics: dict[str, float], seconds: float) -> None:
        """Record the epoch: metrics row, best weights if top-1 improved, then DIR/last."""
        for dataset, split in ((self.train_set, "train"), (self.val_set, "val")):
            self.note_failures(dataset, split, distributed.merge_dicts(self.skipped[split], self.info).items())
        row = self.metrics_row(metrics, seconds)
        self.history.append(row)
        self.log.add_metrics(row)
        self.log.info(self.epoch_line(row))
        self.after_epoch(row)
        if self.improves(row):
            self.best_top1, self.best_epoch = row[self.best_metric], row["epoch"]
            if self.info.is_main:
                ckpt.write_model_files(self.config.output, self.card, self.net)
        self.epoch, self.step = self.epoch + 1, 0
        self.save()

    def improves(self, row: dict[str, Any]) -> bool:
        """Whether the epoch beats the best so far (its weights then become DIR's model)."""
        return row[self.best_metric] > self.best_top1

    def metrics_row(self, metrics: dict[str, float], seconds: float) -> dict[str, Any]:
        return {"epoch": self.epoch + 1, "train_loss": round(metrics["train_loss"], 6),
                "val_loss": round(metrics["val_loss"], 6), "val_top1": round(metrics["val_top1"], 6),
                "val_top5": round(metrics["val_top5"], 6), "lr": self.scheduler.get_last_lr()[0],
                "seconds": round(seconds, 3),
                "clips_per_s": round(metrics["train_clips"] / max(1e-9, self.train_seconds), 2),
                "skipped": sum(len(paths) for paths in self.skipped.values())}

    def epoch_line(self, row: dict[str, Any]) -> str:
        return (f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {row['val_loss']:.4f}, top-1 {100 * row['val_top1']:.1f}%, "
                f"top-5 {100 * row['val_top5']:.1f}%, {row['seconds']:.1f}s")

    def after_epoch(self, row: dict[str, Any]) -> None:
        """What the run says after an epoch's row: a warning when the loss has stalled at chance."""
        hint = stall_hint([r["train_loss"] for r in self.history], len(self.card.labels), self.config)
        if hint:
            self.log.warn(hint)

    def summary(self, result: TrainResult) -> str:  # the run's last log line
        return summary_line(result)

    # ---------------------------------------------------------------- undecodable videos

    def note_failures(self, dataset: VideoClipDataset, split: str, failures: Iterable[tuple[str, str]]) -> None:
        """Record (path, reason) failures of a split, warn once per video, stop past --max-bad-fraction."""
        record_failures(self.skipped[split], failures, len(dataset), self.config.max_bad_fraction, split,
                        self.log.warn)

    def result(self) -> TrainResult:
        skipped = {**self.skipped["train"], **self.skipped["val"]}
        return TrainResult(output=self.config.output, classes=list(self.card.labels), history=self.history,
                           best_top1=self.best_top1, best_epoch=self.best_epoch, skipped=skipped,
                           seconds=self.seconds, interrupted=self.stop.requested)


def train(config: TrainConfig) -> TrainResult:
    """Train as `config` says; returns when done or when SIGINT / SIGTERM stopped it (checkpointed).

    Launched by torchrun, each process runs this; rank 0 alone writes DIR, holding its run lock
    (a second run on DIR is refused) and first repairing what a killed run left (recover).
    """
    return run_trainer(config, Trainer)


def run_trainer(config: TrainConfig, kind: type[Trainer]) -> TrainResult:
    """The run of a Trainer (or of a subclass: distillation) under DIR's lock, in each torchrun process."""
    info = distributed.setup(config.device)
    finished = False
    try:
        with ckpt.run_lock(config.output) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                ckpt.recover(config.output)
            log = RunLog(config.output, enabled=info.is_main, progress=config.progress)
            trainer = kind(config, info, log)
            # predict's rule on a CPU: one torch thread for a cheap model (more only fight over the cores)
            on_cpu = info.device.type == "cpu" and default_threads(info.device, view_gmacs(trainer.card))
            with cpu_threads(config.threads or on_cpu or None):  # None: torch's default
                result = trainer.run()
            summary = trainer.summary(result)
            del trainer  # with its DDP wrapper, which holds the process group: teardown must free it (see there)
            if not result.interrupted:
                log.info(summary)
        finished = True
        return result
    finally:
        distributed.teardown(info, finished)
