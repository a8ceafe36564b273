"""`vidcls distill`: a pretrained quadratic video transformer (joint or divided) turned into ff-linear.

The road T2R (Kasai et al. 2021), Hedgehog (Zhang et al. 2024) and LoLCATs (Zhang et al. 2024)
took for language models, applied to video: keep the teacher's weights, swap only its attention
for a linear one, and teach the new attention to imitate the old.

1. weight transfer (vidcls.train.transfer): the student, ff-linear at the teacher's size, gets
   every teacher tensor that has a counterpart;
2. attention transfer (`--attention-epochs`): only the linear attentions' own parameters train
   (q/k/v, output projections, fixation gates), each block's branches teacher-forced to give
   the teacher block's attention output (vidcls.train.teacher), the rest frozen;
3. distillation (`--epochs`): the whole student trains on the teacher's soft labels, KL at
   `--temperature`; DATA needs no labels (with `--label-weight` its class folders are mixed in).

It is a Trainer (vidcls.train.loop) with other data, losses and metrics, so it has everything
`train` has: AMP, exact resume after kill -9, undecodable videos skipped, torchrun, progress
bars, DIR's layout (best model by agreement with the teacher, last/, metrics.jsonl, train.log)
and its lock. Each epoch's metrics row has the stage, the agreement with the teacher's top-1 and
the KL on the held-out videos (a `--holdout` share of DATA, or `--val`), and the training peak
memory; at the end DIR/distill.json holds those after each stage and the cost of teacher and
student side by side at long clip lengths. Items of the datasets are labelled by their index
in DATA, which is what the teacher-logit cache (`--cache-teacher`) and the labels are looked up by.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vidcls import devices as distributed
from vidcls.bench.memory import PeakMemory
from vidcls.devices import autocast_context
from vidcls.errors import UsageError, VidclsError
from vidcls.fileio import write_text_atomic
from vidcls.models import build_model
from vidcls.train.config import (
    RESUME_MAY_CHANGE,
    DistillConfig,
    TrainResult,
    lr_factor,
    schedule_steps,
)
from vidcls.train.data import Sample, VideoClipDataset, label_indices, read_samples, split_entry
from vidcls.train.log import Bars, run_writes
from vidcls.train.loop import Trainer, make_optimizer, run_trainer, seed_everything
from vidcls.train.teacher import (
    AttentionTransfer,
    TeacherTaps,
    cost_rows,
    cost_table,
    distillation_loss,
    report_frames,
)
from vidcls.train.transfer import STUDENT_FAMILY, attention_parameters, check_families, student_arch, transfer
from vidcls.train.validation import train_means, val_sums, view_probs
from vidcls.video.inputs import resolve_path
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.resolve import load_model, resolve

ATTENTION, DISTILLATION = "attention transfer", "distillation"
REPORT_NAME = "distill.json"


def distill(config: DistillConfig) -> TrainResult:
    """Distill as `config` says; returns when done or stopped by SIGINT / SIGTERM (checkpointed), like train."""
    return run_trainer(config, DistillTrainer)


def data_samples(source: Path, labelled: bool) -> list[Sample]:
    """DATA's videos: every visible file under a folder, or the paths of a list file; with labels (read as
    `train` reads them) only when they are used. Without, the label is ""."""
    if labelled:
        return read_samples(source)
    source = source.expanduser()
    if source.is_dir():
        samples = [Sample(path, "") for path in sorted(source.rglob("*")) if path.is_file()
                   and not any(part.startswith(".") for part in path.relative_to(source).parts)]
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8-sig").splitlines()]
        samples = [Sample(resolve_path(split_entry(line, source.parent)[0], source.parent), "")
                   for line in lines if line and not line.startswith("#")]
    else:
        raise VidclsError(f"{source}: no such data folder or list file")
    if not samples:
        raise VidclsError(f"{source}: no videos found")
    return samples


def held_out_split(count: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) indices of DATA: a seeded random `share` (at least one video) held out."""
    if count < 2:
        raise UsageError(f"--data holds {count} video(s); distillation needs at least 2 (one held out)")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, min(count - 1, round(share * count)))
    return sorted(order[held:]), sorted(order[:held])


class PinnedViews(VideoClipDataset):
    """Training clips whose augmentation is drawn once (epoch 0's) and kept, so a clip's teacher logits
    can be cached and reused every epoch (--cache-teacher)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = 0


class DistillTrainer(Trainer):
    """Weight transfer, then attention transfer, then distillation (module docstring)."""

    config: DistillConfig
    best_metric = "agreement"

    # ---------------------------------------------------------------- setup

    def prepare(self) -> tuple[VideoClipDataset, VideoClipDataset, dict[str, Any] | None]:
        c = self.config
        labelled = c.label_weight > 0
        samples = data_samples(c.train, labelled)
        if c.holds_out:
            train_part, held_part = held_out_split(len(samples), c.holdout, c.seed)
            train_samples, held_samples = [samples[i] for i in train_part], [samples[i] for i in held_part]
        else:
            train_samples, held_samples = samples, data_samples(c.val, labelled)
        check_families(resolve(c.teacher, need_weights=False).card.family, STUDENT_FAMILY, c.teacher, c.model)
        loaded = load_model(c.teacher, device=self.info.device)  # an architecture without weights is refused
        if loaded.exported:
            raise UsageError(f"--teacher {c.teacher} is an exported graph; distillation reads a torch model's "
                             f"weights and layers (pass its model directory or zoo name)")
        self.teacher_card, self.teacher = loaded.card, loaded.module.eval().requires_grad_(False)
        self.taps = TeacherTaps(self.teacher)
        self.labels = torch.tensor(label_indices(train_samples, self.teacher_card.labels, "--data")) \
            if labelled else None
        seed_everything(c.seed)
        resume_state = self.start_run([])
        options = dict(seed=c.seed, flip=c.flip, shuffle_frames=c.shuffle_frames, scale=c.scale)
        kind = PinnedViews if c.cache_teacher else VideoClipDataset
        train_set = kind([s.path for s in train_samples], list(range(len(train_samples))), self.card.input,
                         train=True, **options)
        val_set = VideoClipDataset([s.path for s in held_samples], list(range(len(held_samples))), self.card.input,
                                   train=False, **options)
        classes = len(self.card.labels)
        self.cached = torch.zeros(len(train_samples), dtype=torch.bool)
        self.cache = torch.zeros(len(train_samples), classes) if c.cache_teacher else None
        self.held_out_teacher: dict[int, torch.Tensor] = {}  # index -> the teacher's view-averaged probabilities
        self.peak_mib: float | None = None
        self.best_kl = float("inf")
        return train_set, val_set, resume_state

    def start_run(self, classes: list[str]) -> dict[str, Any] | None:
        """The student: from DIR/last on --resume, else built at the teacher's size and filled from it."""
        c = self.config
        if c.resume:
            return self.resume_last(RESUME_MAY_CHANGE - {"epochs"})
        self.check_new_output()
        variant = resolve(c.model, need_weights=False).card
        check_families(self.teacher_card.family, variant.family, c.teacher, c.model)
        arch = student_arch(self.teacher_card.family, self.teacher_card.arch, variant.arch)
        self.card = ModelCard(name=c.output.name, family=STUDENT_FAMILY, arch=arch, input=self.teacher_card.input,
                              labels=list(self.teacher_card.labels))
        self.net = build_model(STUDENT_FAMILY, arch, frames=self.card.input.frames, size=self.card.input.size)
        done = transfer(self.teacher, self.net)
        kinds = ", ".join(f"{n} {how}" for how, n in sorted(Counter(d.how for d in done).items()))
        self.log.info(f"student: {c.model!r} ({STUDENT_FAMILY}) at the size of the {self.teacher_card.family} teacher "
                      f"{c.teacher!r}: {len(done)} tensors from the teacher ({kinds}; see vidcls.train.transfer)")
        return None

    def stage_of(self, epoch: int) -> str:
        return ATTENTION if epoch < self.config.attention_epochs else DISTILLATION

    def start_optimization(self, resume_state: dict[str, Any] | None) -> None:
        self.epochs = self.config.attention_epochs + self.config.epochs
        self.begin_stage(self.stage_of(resume_state["epoch"] if resume_state else 0))

    def begin_stage(self, stage: str) -> None:
        """Freeze what the stage does not train; a fresh optimizer and learning-rate plan for the stage."""
        c = self.config
        self.stage = stage
        attention = stage == ATTENTION
        trained = set(attention_parameters(self.net)) if attention else None
        for name, param in self.net.named_parameters():
            param.requires_grad_(trained is None or name in trained)
        epochs = c.attention_epochs if attention else c.epochs
        self.warmup_steps, self.total_steps = schedule_steps(epochs, c.warmup_epochs, self.updates_per_epoch)
        self.model = distributed.wrap(AttentionTransfer(self.net) if attention else self.net, self.info)
        if c.compile:
            self.model = torch.compile(self.model)
        self.optimizer = make_optimizer(c, self.net, c.attention_lr if attention else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.warmup_steps, self.total_steps))

    def restore_optimization(self, state: dict[str, Any]) -> None:
        """A checkpoint at the end of attention transfer leaves distillation its fresh optimizer."""
        if state.get("stage") == self.stage:
            super().restore_optimization(state)

    def restore_state(self, state: dict[str, Any]) -> None:
        super().restore_state(state)
        self.best_kl = state["best_kl"]
        if self.cache is not None:
            self.cache, self.cached = state["teacher_logits"].clone(), state["teacher_cached"].clone()

    def state(self) -> dict[str, Any]:
        state = {**super().state(), "stage": self.stage, "best_kl": self.best_kl}
        if self.cache is not None:
            state.update(teacher_logits=self.cache, teacher_cached=self.cached)
        return state

    # ---------------------------------------------------------------- training

    def train_epoch(self, bars: Bars) -> None:
        stage = self.stage_of(self.epoch)
        if stage != self.stage:
            self.begin_stage(stage)
        with PeakMemory(self.info.device, collect=False) as peak:
            super().train_epoch(bars)
        self.peak_mib = peak.mib

    def compute_loss(self, videos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Attention transfer: the relative MSE of the attention outputs. Distillation: KL at the temperature
        on the teacher's soft labels, with the labels' cross-entropy mixed in by --label-weight."""
        c, device = self.config, self.info.device
        clips = videos.to(device, non_blocking=True)
        if self.stage == ATTENTION:
            with torch.no_grad(), autocast_context(device, c.precision):
                layers = self.taps(clips)
            with autocast_context(device, c.precision):
                return self.model(layers, self.taps.grid(clips)).float()
        teacher = self.teacher_logits(clips, labels, real=videos is not self.placeholder)
        with autocast_context(device, c.precision):
            logits = self.model(clips).float()
        loss = distillation_loss(logits, teacher, c.temperature)
        if self.labels is not None:
            truth = self.labels[labels].to(device)
            cross_entropy = F.cross_entropy(logits, truth, label_smoothing=c.label_smoothing)
            loss = (1 - c.label_weight) * loss + c.label_weight * cross_entropy
        return loss

    @torch.no_grad()
    def teacher_logits(self, clips: torch.Tensor, indices: torch.Tensor, real: bool) -> torch.Tensor:
        """The teacher's logits of a batch (float32), from the cache when every clip is in it."""
        if self.cache is not None and real and bool(self.cached[indices].all()):
            return self.cache[indices].to(clips.device)
        with autocast_context(clips.device, self.config.precision):
            logits = self.teacher(clips).float()
        if self.cache is not None and real:
            self.cache[indices], self.cached[indices] = logits.cpu(), True
        return logits

    # ---------------------------------------------------------------- agreement with the teacher

    @torch.no_grad()
    def evaluate(self, bars: Bars) -> dict[str, float] | None:
        """Agreement of the student's top-1 with the teacher's, and KL(teacher || student), of the softmax
        averaged over each held-out video's test views; None when a stop was requested part-way."""

        def batch_sums(views: torch.Tensor, indices: torch.Tensor) -> list[float]:
            student = view_probs(self.net, views, self.config.precision)
            teacher = self.held_out_probs(views, indices).to(views.device)
            kl = (teacher * (teacher.clamp_min(1e-12).log() - student.clamp_min(1e-12).log())).sum(-1)
            return [(student.argmax(-1) == teacher.argmax(-1)).sum().item(), kl.sum().item(), len(views)]

        sums = val_sums(self, bars, "comparing with the teacher", 3, batch_sums)  # agreements, KL, videos
        if sums is None:
            return None
        (agree, kl, videos), (train_loss, train_clips) = sums, train_means(self)
        return {"train_loss": train_loss, "agreement": agree / videos, "kl": kl / videos, "train_clips": train_clips}

    def held_out_probs(self, views: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The teacher's view-averaged probabilities of held-out videos, computed once per video."""
        missing = [i for i, index in enumerate(indices.tolist()) if index not in self.held_out_teacher]
        if missing:
            chosen = views[missing]
            with autocast_context(views.device, self.config.precision):
                logits = self.teacher(chosen.flatten(0, 1)).float()
            probs = logits.softmax(-1).unflatten(0, chosen.shape[:2]).mean(1).cpu()
            for i, p in zip(missing, probs, strict=True):
                self.held_out_teacher[int(indices[i])] = p
        return torch.stack([self.held_out_teacher[int(i)] for i in indices])

    # ---------------------------------------------------------------- what the run reports

    def improves(self, row: dict[str, Any]) -> bool:
        """Best by agreement with the teacher, then by KL: a few hundred held-out videos soon all agree."""
        if (row["agreement"], -row["kl"]) <= (self.best_top1, -self.best_kl):
            return False
        self.best_kl = row["kl"]
        return True

    def metrics_row(self, metrics: dict[str, float], seconds: float) -> dict[str, Any]:
        return {"epoch": self.epoch + 1, "stage": self.stage, "train_loss": round(metrics["train_loss"], 6),
                "agreement": round(metrics["agreement"], 6), "kl": round(metrics["kl"], 6),
                "lr": self.scheduler.get_last_lr()[0], "seconds": round(seconds, 3),
                "clips_per_s": round(metrics["train_clips"] / max(1e-9, self.train_seconds), 2),
                "peak_memory_mib": None if self.peak_mib is None else round(self.peak_mib, 1),
                "skipped": sum(len(paths) for paths in self.skipped.values())}

    def epoch_line(self, row: dict[str, Any]) -> str:
        loss = "relative MSE of the attention outputs" if row["stage"] == ATTENTION else "loss"
        return (f"epoch {row['epoch']}/{self.epochs} ({row['stage']}): {loss} {row['train_loss']:.4f}, agrees with "
                f"the teacher on {100 * row['agreement']:.1f}% of {len(self.val_set)} held-out videos, KL "
                f"{row['kl']:.4f}, {row['clips_per_s']:.1f} clips/s, {row['seconds']:.1f}s")

    def after_epoch(self, row: dict[str, Any]) -> None:
        if row["epoch"] in (self.config.attention_epochs, self.epochs):
            self.log.info(f"after {row['stage']}: top-1 agreement with the teacher {100 * row['agreement']:.1f}%, "
                          f"KL {row['kl']:.4f} on {len(self.val_set)} held-out videos")

    def summary(self, result: TrainResult) -> str:
        return (f"done in {result.seconds:.0f}s: the student agrees with the teacher's top-1 on "
                f"{100 * result.best_top1:.1f}% of the held-out videos (epoch {result.best_epoch}), saved in "
                f"{result.output}")

    def run(self) -> TrainResult:
        result = super().run()
        if not result.interrupted and self.info.is_main:
            self.report()
        return result

    def report(self) -> None:
        """Log the cost comparison and write DIR/distill.json: agreement after each stage, cost side by side."""
        began = time.perf_counter()
        frames = report_frames(self.teacher_card, self.config.report_frames)
        rows = cost_rows((self.teacher_card, self.teacher), (self.card, self.net), frames, self.info.device)
        self.log.info(f"cost of one view, teacher against student ({self.teacher_card.input.size} px; memory: peak "
                      f"of one forward, '-' where not measured):")
        for line in cost_table(rows):
            self.log.info("  " + line)
        stages = {row["stage"]: {"epoch": row["epoch"], "agreement": row["agreement"], "kl": row["kl"]}
                  for row in self.history}
        report = {"teacher": self.config.teacher, "student": self.config.model, "held_out_videos": len(self.val_set),
                  "stages": stages, "best_epoch": self.best_epoch, "cost": rows,
                  "cost_seconds": round(time.perf_counter() - began, 1)}
        with run_writes(self.config.output, REPORT_NAME):
            write_text_atomic(self.config.output / REPORT_NAME, json.dumps(report, indent=2) + "\n")
