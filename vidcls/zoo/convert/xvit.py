"""The X-ViT authors' checkpoint layout (SlowFast + timm code of 1adrianb/video-transformers) -> xvit.

Their model (slowfast/models/video_model_builder.py, XVIT) wraps a timm ViT as `base_model`
(per-frame class token, `temp_embed` of shape (1, T, 1, C)) and puts the Temporal Attention
head in `consensus` (head_helper.py, VitHead: a learnable `cls_token`, one
`temporal_encoder` block, and `mlp_head` = LayerNorm, Linear, GELU, Dropout, Linear). With
MODEL.DROPOUT_RATE > 0 it also builds `new_fc`, a per-frame classifier that the TA head's
forward never calls: next to a `consensus` head it is dropped here (it holds no trained
function). The averaging variant (no `consensus`) classifies every frame with `new_fc` (or
`base_model.head`) and averages; averaging logits equals classifying the averaged frame
features, which is our "mean" head.

What their code fixes beyond the tensors' shapes: the TA head's LayerNorms use torch's
default eps 1e-5 (`head_layer_norm_eps`), and its block has no qkv bias (ours gets zeros,
the same function). The mixing groups (their XVIT.NUM_SEGMENTS) leave no trace in the
tensors: pass `--arch num_segments=8` for their Kinetics configs (their SSv2 config mixes
the whole 16-frame clip, the default); the zoo entries set it.

Mapped from the key names of the authors' public code and tested on checkpoints with that
layout built in the tests, not on the released files.
"""

from __future__ import annotations

from typing import Any

import torch

from vidcls.zoo.convert.keys import compile_rules, rename_state

FAMILY = "xvit"
AUTHORS_HEAD_EPS = 1e-5  # nn.LayerNorm's default, which their VitHead and its Block use
_RULES = compile_rules([
    (r"^base_model\.patch_embed\.proj\.", "patch_embed.proj."),
    (r"^base_model\.cls_token$", "cls_token"),
    (r"^base_model\.pos_embed$", "pos_embed"),
    (r"^base_model\.temp_embed$", "time_embed"),
    (r"^base_model\.blocks\.", "blocks."),
    (r"^base_model\.norm\.", "norm."),
    (r"^(?:new_fc|base_model\.head)\.", "head."),
    (r"^consensus\.cls_token$", "head.token"),
    (r"^consensus\.temporal_encoder\.0\.", "head.block."),
    (r"^consensus\.mlp_head\.0\.", "head.norm."),
    (r"^consensus\.mlp_head\.1\.", "head.fc1."),
    (r"^consensus\.mlp_head\.4\.", "head.fc2."),
])


def matches(state: dict[str, torch.Tensor]) -> bool:
    return "base_model.temp_embed" in state


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The authors' state dict -> (ours, their keys we have no place for)."""
    if "consensus.cls_token" in state:  # the TA head classifies; new_fc is built but never called
        state = {k: v for k, v in state.items() if not k.startswith("new_fc.")}
    out, unused = rename_state(state, _RULES)
    if out.get("patch_embed.proj.weight") is not None and out["patch_embed.proj.weight"].ndim == 4:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)  # Conv2d -> time axis 1
    qkv = out.get("head.block.attn.qkv.weight")
    if qkv is not None and "head.block.attn.qkv.bias" not in out:
        out["head.block.attn.qkv.bias"] = qkv.new_zeros(qkv.shape[0])
    return out, unused


def arch_hints(state: dict[str, torch.Tensor], given: dict[str, Any]) -> dict[str, Any]:
    """What their code fixes rather than the shapes, given the converted state dict (and the
    user's --arch, which wins): their TA head's LayerNorm eps."""
    return {"head_layer_norm_eps": AUTHORS_HEAD_EPS} if "head.token" in state else {}


def fit_state(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The converted state dict for a model of arch["num_frames"] frames.

    Their ViT adds `temp_embed` by viewing the clip's frames as rows of the table's length, so
    a table shorter than the clip repeats over its consecutive groups of frames; when the
    table's length divides the frame count, it is repeated here as their forward would use it.
    Any other length is left to fail as a wrong shape.
    """
    table, frames = state.get("time_embed"), arch.get("num_frames")
    if table is None or frames is None or table.shape[1] == frames or frames % table.shape[1]:
        return state
    return state | {"time_embed": table.repeat(1, frames // table.shape[1], 1, 1)}
