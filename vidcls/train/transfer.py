"""Weight transfer: a pretrained quadratic video ViT (joint or divided) -> an ff-linear student at its size.

The first step of `vidcls distill`. The student is the ff-linear family built at the teacher's
size (width, depth, heads, MLP width, classes, frames, frame size and token grid), with the
attention variant of the student REF (feature fixation, shared gate, neighbourhood
association, shift): `student_arch`. Then every student tensor that has a counterpart in the
teacher is filled from it (`transfer`), so the student starts as close to the teacher as a
linear attention allows. The mapping, tensor by tensor (the `how` of each `Transferred`):

- copy      the same tensor: q/k/v (`qkv`), MLP `fc1` / `fc2`, every LayerNorm, the patch
            embedding's bias, the classifier;
- squeezed  a per-frame teacher's Conv3d patch kernel (C, 3, 1, p, p) into the student's
            Conv2d (C, 3, p, p); a tubelet teacher (VideoMAE / ViViT, 2 frames a token) makes
            a tubelet student (`tubelet_size`, a Conv3d of the same kernel), copied as is;
- qv-bias   VideoMAE's separate q and v biases (no k bias) as one qkv bias [q, 0, v];
- halved    a joint teacher has one attention per block where the student has two (temporal,
            then spatial): both start from it (its norm, q/k/v), each with half its output
            projection, so their sum starts at the scale of the teacher's one branch;
- folded    TimeSformer's `temporal_fc` after the temporal attention's projection, folded into
            one projection: W = W_fc W_proj, b = W_fc b_proj + b_fc;
- table     position tables: a joint teacher's space-time table (learned, or VideoMAE's fixed
            sinusoidal one) becomes the student's learned space-time table (`pos_embed:
            spacetime`), its class-token entry dropped; a divided teacher's spatial table
            (class entry dropped) the student's spatial one and its (1, T, C) time table the
            student's (1, T, 1, C);
- final-norm the teacher's final LayerNorm (or VideoMAE's fc_norm) becomes the student's norm
            of the mean-pooled tokens (`fc_norm`); the student has no class token, so this and
            the classifier are where it differs most from the teacher until distillation.

Set, not copied (named in the result as `set`): the fixation gates' weights and biases to zero,
so every gate is sigmoid(0) = 0.5 on every channel, a uniform scale of phi(q) and phi(k) that
cancels between the linear attention's numerator and normaliser (the gates change nothing at
the start); the MLP's depthwise conv to the identity (centre tap 1, bias 0), so the conv MLP is
the teacher's MLP; a joint teacher's student time table to zero (its table holds time already).

Neighbourhood association has no parameters and cannot be switched off by weights: a
`--student ff-linear` starts with it on, which is one reason for the attention-transfer stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidcls.errors import UsageError
from vidcls.models import make_config
from vidcls.models.base import VideoClassifier
from vidcls.models.layers import Attention

TEACHER_FAMILIES = ("joint", "divided")
STUDENT_FAMILY = "ff-linear"
# what the student REF decides; everything else comes from the teacher
ATTENTION_OPTIONS = ("fixation", "shared_gate", "neighbourhood", "shift_div", "attn_eps")


@dataclass(frozen=True)
class Transferred:
    """One student tensor and where its values came from (see the module docstring for `how`)."""

    student: str
    teacher: str  # teacher tensor name(s), "+"-joined; "" for a value that is set
    how: str


def check_families(teacher_family: str, student_family: str, teacher_ref: str, student_ref: str) -> None:
    """UsageError unless the pair is a quadratic ViT teacher and an ff-linear student."""
    if teacher_family not in TEACHER_FAMILIES:
        raise UsageError(f"--teacher {teacher_ref} is a {teacher_family!r} model; distillation starts from a "
                         f"{' or '.join(repr(f) for f in TEACHER_FAMILIES)} model (e.g. timesformer-k400, "
                         f"videomae-k400, demo-motion)")
    if student_family != STUDENT_FAMILY:
        raise UsageError(f"--student {student_ref} is a {student_family!r} model; the student must be of the "
                         f"{STUDENT_FAMILY!r} family (ff-linear, ff-linear-ssv2, linear, ...)")


def student_arch(teacher_family: str, teacher_arch: dict[str, Any], student_arch: dict[str, Any]) -> dict[str, Any]:
    """The ff-linear arch of a student for this teacher: the teacher's sizes and token grid, the student
    REF's attention variant (ATTENTION_OPTIONS), patches cut as the teacher cuts them (kernel = stride =
    the teacher's patch, no padding), no LayerNorm on them, a position table like the teacher's, and a
    head without hidden layer (pooled feature -> classifier, as the teacher's)."""
    t = make_config(teacher_family, teacher_arch)
    variant = make_config(STUDENT_FAMILY, student_arch)
    arch = {"num_classes": t.num_classes, "num_frames": t.num_frames, "img_size": t.img_size,
            "in_chans": t.in_chans, "embed_dim": t.embed_dim, "depth": t.depth, "num_heads": t.num_heads,
            "qkv_bias": t.qkv_bias is not False, "mlp_activation": t.mlp_activation,
            "layer_norm_eps": t.layer_norm_eps, "drop_path": t.drop_path, "dropout": t.dropout,
            "head_dropout": t.head_dropout, "patch_kernel": t.patch_size, "patch_stride": t.patch_size,
            "patch_padding": 0, "mlp_hidden": int(t.embed_dim * t.mlp_ratio), "head_hidden": 0,
            "tubelet_size": getattr(t, "tubelet_size", 1), "patch_norm": False,
            "pos_embed": "spacetime" if teacher_family == "joint" else "spatial"}
    arch.update({key: getattr(variant, key) for key in ATTENTION_OPTIONS})
    make_config(STUDENT_FAMILY, arch)  # every value checked here, before a model is built
    return arch


def attention_parameters(student: nn.Module) -> list[str]:
    """The names of the linear attentions' own parameters (q/k/v, output projection, fixation gates):
    what the attention-transfer stage trains; every other parameter stays frozen."""
    return [name for name, _ in student.named_parameters() if ".temporal_attn." in name or ".spatial_attn." in name]


class _Writer:
    """Fills student tensors by name, checking shapes, and records what came from where."""

    def __init__(self, student: nn.Module) -> None:
        self.params = dict(student.named_parameters())
        self.done: list[Transferred] = []

    def put(self, name: str, value: torch.Tensor, teacher: str, how: str) -> None:
        target = self.params[name]
        if target.shape != value.shape:
            raise UsageError(f"weight transfer: {name} is {tuple(target.shape)} but {teacher or how} gives "
                             f"{tuple(value.shape)}")
        target.copy_(value.to(target.dtype))
        self.done.append(Transferred(name, teacher, how))

    def linear(self, student: str, module: nn.Linear, teacher: str, how: str = "copy", scale: float = 1.0) -> None:
        self.put(f"{student}.weight", module.weight * scale, f"{teacher}.weight", how)
        if module.bias is not None:
            self.put(f"{student}.bias", module.bias * scale, f"{teacher}.bias", how)

    def qkv(self, student: str, attn: Attention, teacher: str) -> None:
        self.put(f"{student}.weight", attn.qkv.weight, f"{teacher}.qkv.weight", "copy")
        if attn.q_bias is not None:
            bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
            self.put(f"{student}.bias", bias, f"{teacher}.q_bias+{teacher}.v_bias", "qv-bias")
        elif attn.qkv.bias is not None:
            self.put(f"{student}.bias", attn.qkv.bias, f"{teacher}.qkv.bias", "copy")

    def set(self, name: str, value: torch.Tensor) -> None:
        self.put(name, value, "", "set")


@torch.no_grad()
def transfer(teacher: VideoClassifier, student: VideoClassifier) -> list[Transferred]:
    """Fill `student` (an ff-linear model built with student_arch) from `teacher` (joint or divided), in
    place; returns every student tensor written and how (the module docstring). Reads nothing else,
    writes nothing else: the student's remaining tensors (none, for the archs student_arch makes)
    keep their initialisation."""
    family = teacher.family
    check_families(family, student.family, family, student.family)
    out = _Writer(student)
    kernel = teacher.patch_embed.proj.weight
    squeeze = kernel.shape[2] == 1 and out.params["patch_embed.proj.weight"].ndim == 4
    out.put("patch_embed.proj.weight", kernel[:, :, 0] if squeeze else kernel, "patch_embed.proj.weight",
            "squeezed" if squeeze else "copy")
    out.put("patch_embed.proj.bias", teacher.patch_embed.proj.bias, "patch_embed.proj.bias", "copy")
    _tables(out, teacher, student)
    for i, (t_block, s_block) in enumerate(zip(teacher.blocks, student.blocks, strict=True)):
        _block(out, f"blocks.{i}", t_block, s_block, family)
    final = teacher.fc_norm if isinstance(teacher.norm, nn.Identity) else teacher.norm
    final_name = "fc_norm" if isinstance(teacher.norm, nn.Identity) else "norm"
    out.linear("fc_norm", final, final_name, "final-norm")
    out.linear("head", teacher.head, "head")
    return out.done


def _tables(out: _Writer, teacher: VideoClassifier, student: VideoClassifier) -> None:
    if teacher.family == "divided":
        out.put("pos_embed", teacher.pos_embed[:, 1:], "pos_embed", "table")
        out.put("time_embed", teacher.time_embed.unsqueeze(2), "time_embed", "table")
        return
    learned = teacher.config.pos_embed == "learned"
    table = teacher.pos_embed if learned else teacher.pos_table
    start = 1 if teacher.cls_token is not None else 0
    out.put("pos_embed", table[:, start:], "pos_embed" if learned else "pos_table (sinusoidal)", "table")
    out.set("time_embed", torch.zeros_like(student.time_embed))


def _block(out: _Writer, name: str, t_block: nn.Module, s_block: nn.Module, family: str) -> None:
    if family == "joint":
        for branch in ("temporal", "spatial"):
            out.linear(f"{name}.{branch}_norm", t_block.norm1, f"{name}.norm1")
            out.qkv(f"{name}.{branch}_attn.qkv", t_block.attn, f"{name}.attn")
            out.linear(f"{name}.{branch}_attn.proj", t_block.attn.proj, f"{name}.attn.proj", "halved", 0.5)
    else:
        out.linear(f"{name}.temporal_norm", t_block.temporal_norm, f"{name}.temporal_norm")
        out.qkv(f"{name}.temporal_attn.qkv", t_block.temporal_attn, f"{name}.temporal_attn")
        proj, fc = t_block.temporal_attn.proj, t_block.temporal_fc
        sources = f"{name}.temporal_attn.proj.{{0}}+{name}.temporal_fc.{{0}}"
        out.put(f"{name}.temporal_attn.proj.weight", fc.weight @ proj.weight, sources.format("weight"), "folded")
        out.put(f"{name}.temporal_attn.proj.bias", fc.weight @ proj.bias + fc.bias, sources.format("bias"), "folded")
        out.linear(f"{name}.spatial_norm", t_block.norm1, f"{name}.norm1")
        out.qkv(f"{name}.spatial_attn.qkv", t_block.attn, f"{name}.attn")
        out.linear(f"{name}.spatial_attn.proj", t_block.attn.proj, f"{name}.attn.proj")
    out.linear(f"{name}.mlp_norm", t_block.norm2, f"{name}.norm2")
    out.linear(f"{name}.mlp.fc1", t_block.mlp.fc1, f"{name}.mlp.fc1")
    out.linear(f"{name}.mlp.fc2", t_block.mlp.fc2, f"{name}.mlp.fc2")
    conv = s_block.mlp.dwconv.weight
    identity = torch.zeros_like(conv)
    identity[:, :, conv.shape[2] // 2, conv.shape[3] // 2] = 1.0
    out.set(f"{name}.mlp.dwconv.weight", identity)
    out.set(f"{name}.mlp.dwconv.bias", torch.zeros_like(s_block.mlp.dwconv.bias))
    for branch in ("temporal", "spatial"):
        fixation = getattr(s_block, f"{branch}_attn").fixation
        for gate in ("gate_q", "gate_k"):
            if fixation is not None and getattr(fixation, gate) is not None:
                for part in ("weight", "bias"):
                    key = f"{name}.{branch}_attn.fixation.{gate}.{part}"
                    out.set(key, torch.zeros_like(out.params[key]))
