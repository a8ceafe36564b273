"""What distillation reads from the teacher, the losses that compare the student with it, and the
cost of the two side by side.

Attention transfer is layer-wise and teacher-forced (T2R, Hedgehog, LoLCATs): every student block
gets the teacher block's own input and its attention branches are trained to give the teacher's
attention output, so all layers learn at once and an early layer's error never reaches a later
one. `TeacherTaps` runs the teacher and keeps those inputs and outputs, in the student's token
layout (B, T', S, C), class tokens left out (the student has none):

- joint teacher, one attention per block: the block input x and the attention output A(LN(x));
  the student's two branches are compared by their sum, temporal(x) + spatial(x + temporal(x)),
  which is what they add to the residual;
- divided teacher: its temporal branch (attention, then temporal_fc) against the student's
  temporal branch on the block input, and its spatial attention against the student's spatial
  branch on the spatial attention's own input.

The loss of each comparison is the MSE relative to the target's mean square, so every layer
weighs alike whatever the scale of its activations; the step's loss is their mean.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidcls.bench.cost import view_gmacs
from vidcls.bench.memory import PeakMemory
from vidcls.models.base import VideoClassifier
from vidcls.zoo.modeldir import ModelCard

Layer = dict[str, torch.Tensor]
# the largest forward (GMACs) whose peak memory the cost report measures, by device type: beyond it only
# the MACs are counted (a ViT-B joint model at 128 frames takes minutes per forward on a CPU)
MEMORY_GMACS_LIMIT = {"cpu": 50.0, "cuda": 100_000.0}


def relative_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean((prediction - target)^2) / mean(target^2), in float32."""
    target = target.float()
    return (prediction.float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes at `temperature`, times temperature^2 (Hinton et al.), so the
    gradient keeps its scale whatever the temperature; mean over the batch."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                  log_target=True, reduction="batchmean")
    return kl * t * t


class TeacherTaps:
    """Calls the teacher and returns, per block, the tensors attention transfer compares (module docstring)."""

    def __init__(self, teacher: VideoClassifier) -> None:
        self.teacher = teacher
        self.joint = teacher.family == "joint"
        self.start = 1 if not self.joint or teacher.cls_token is not None else 0

    def grid(self, video: torch.Tensor) -> tuple[int, int]:
        """The teacher's (h, w) patch grid for a video (B, C, T, H, W)."""
        patch = self.teacher.config.patch_size
        return video.shape[3] // patch, video.shape[4] // patch

    def __call__(self, video: torch.Tensor) -> list[Layer]:
        c = self.teacher.config
        steps = video.shape[2] // (c.tubelet_size if self.joint else 1)
        h, w = self.grid(video)
        layers: list[Layer] = [{} for _ in self.teacher.blocks]

        def patches(tokens: torch.Tensor) -> torch.Tensor:  # (B, [1 +] T' S, C) -> (B, T', S, C)
            return tokens[:, self.start:].unflatten(1, (steps, h * w))

        def keep(layer: Layer, key: str, edit: Any, output: bool = True):
            if output:
                return lambda module, args, out: layer.__setitem__(key, edit(out))
            return lambda module, args: layer.__setitem__(key, edit(args[0]))

        handles = []
        for block, layer in zip(self.teacher.blocks, layers, strict=True):
            handles.append(block.register_forward_pre_hook(keep(layer, "input", patches, output=False)))
            if self.joint:
                handles.append(block.attn.register_forward_hook(keep(layer, "joint", patches)))
            else:
                by_frame = lambda t: t.transpose(1, 2)  # noqa: E731 - (B, S, T, C) -> (B, T, S, C)
                no_cls = lambda t: t[:, :, 1:]  # noqa: E731 - each frame's class-token copy left out
                handles += [block.temporal_fc.register_forward_hook(keep(layer, "temporal", by_frame)),
                            block.norm1.register_forward_pre_hook(keep(layer, "spatial_input", no_cls, output=False)),
                            block.attn.register_forward_hook(keep(layer, "spatial", no_cls))]
        try:
            self.teacher(video)
        finally:
            for handle in handles:
                handle.remove()
        return layers


class AttentionTransfer(nn.Module):
    """The student's attention branches on the teacher's layer inputs; forward returns the mean relative MSE
    against the teacher's attention outputs. A module of its own so that DDP sees the forward it averages."""

    def __init__(self, student: VideoClassifier) -> None:
        super().__init__()
        self.student = student

    def forward(self, layers: list[Layer], grid: tuple[int, int]) -> torch.Tensor:
        losses = []
        for block, layer in zip(self.student.blocks, layers, strict=True):
            if "joint" in layer:
                x = layer["input"]
                temporal = block.temporal(x, grid)
                losses.append(relative_mse(temporal + block.spatial(x + temporal), layer["joint"]))
            else:
                losses.append(relative_mse(block.temporal(layer["input"], grid), layer["temporal"]))
                losses.append(relative_mse(block.spatial(layer["spatial_input"]), layer["spatial"]))
        return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- cost side by side


def report_frames(card: ModelCard, asked: tuple[int, ...]) -> list[int]:
    """The clip lengths of the cost comparison: those asked for, else 1, 4 and 16 x the teacher's frames,
    each rounded up to whole tubelets."""
    step = int(card.arch.get("tubelet_size", 1))
    lengths = asked or tuple(card.input.frames * k for k in (1, 4, 16))
    return sorted({-(-int(n) // step) * step for n in lengths})


@torch.inference_mode()
def forward_peak_mib(module: nn.Module, frames: int, size: int, device: torch.device) -> float | None:
    """Peak memory (MiB) of one forward of a batch-1 clip, above what was held before (vidcls.bench.memory)."""
    clip = torch.zeros(1, 3, frames, size, size, device=device)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), PeakMemory(device, collect=False) as peak:
            warnings.simplefilter("ignore")  # off the trained length the tables are interpolated, with a warning
            module(clip)
    finally:
        module.train(was_training)
    return None if peak.mib is None else round(peak.mib, 1)


def cost_rows(teacher: tuple[ModelCard, nn.Module], student: tuple[ModelCard, nn.Module], frames: list[int],
              device: torch.device) -> list[dict[str, Any]]:
    """Per clip length: GMACs of one view (counted, vidcls.bench.cost) and the peak memory of one forward
    (measured, where the teacher's forward is under MEMORY_GMACS_LIMIT) of teacher and student."""
    rows = []
    limit = MEMORY_GMACS_LIMIT.get(device.type, MEMORY_GMACS_LIMIT["cpu"])
    size = teacher[0].input.size
    for n in frames:
        row: dict[str, Any] = {"frames": n}
        measure = view_gmacs(teacher[0], n) <= limit
        for role, (card, module) in (("teacher", teacher), ("student", student)):
            row[f"{role}_gmacs"] = round(view_gmacs(card, n), 4)
            row[f"{role}_memory_mib"] = forward_peak_mib(module, n, size, device) if measure else None
        rows.append(row)
    return rows


def cost_table(rows: list[dict[str, Any]]) -> list[str]:
    """The cost rows as log lines."""
    lines = ["frames   teacher GMACs   student GMACs   ratio   teacher MiB   student MiB"]
    for row in rows:
        memory = [f"{row[k]:>11.1f}" if row[k] is not None else f"{'-':>11}"
                  for k in ("teacher_memory_mib", "student_memory_mib")]
        ratio = row["teacher_gmacs"] / max(row["student_gmacs"], 1e-12)
        lines.append(f"{row['frames']:>6}   {row['teacher_gmacs']:>13.4g}   {row['student_gmacs']:>13.4g}   "
                     f"{ratio:>5.2f}   {memory[0]}   {memory[1]}")
    return lines
