"""The X-ViT authors' checkpoint layout (SlowFast + timm code of 1adrianb/video-transformers) -> xvit.

Their model wraps a timm ViT as `base_model` (per-frame class token, `temp_embed` of shape
(1, T, 1, C)) and puts the Temporal Attention head in `consensus` (a learnable
`cls_token`, one `temporal_encoder` block, and `mlp_head` = LayerNorm, Linear, GELU,
Dropout, Linear). The averaging variant instead classifies every frame with `new_fc` (or
`base_model.head`) and averages; averaging logits equals classifying the averaged frame
features, which is our "mean" head.

Two differences are absorbed here or stated: their TA block has no qkv bias (ours gets
zeros, the same function), and their head's LayerNorms use torch's default eps 1e-5 where
ours use the backbone's 1e-6 (a relative effect of about 1e-5 on the logits).

Mapped from the key names of the authors' public code and tested on a checkpoint with
that layout built in the tests, not on the released files.
"""

from __future__ import annotations

import torch

from vidcls.zoo.convert.keys import compile_rules, rename_state

FAMILY = "xvit"
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
    out, unused = rename_state(state, _RULES)
    if out.get("patch_embed.proj.weight") is not None and out["patch_embed.proj.weight"].ndim == 4:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)  # Conv2d -> time axis 1
    qkv = out.get("head.block.attn.qkv.weight")
    if qkv is not None and "head.block.attn.qkv.bias" not in out:
        out["head.block.attn.qkv.bias"] = qkv.new_zeros(qkv.shape[0])
    return out, unused
