"""The VidTr authors' checkpoint layout (amazon-science/gluonmm, vidtr_split.py) -> vidtr.

Their non-compact model (`MultiHeadSplitAttentionDualToken`, normalize_before=True) is our
vidtr family with `attention="shared"` and `embedding="attention_input"`:

- one q/k/v projection (`self_attn.in_proj_weight` / `in_proj_bias`) serves both
  attentions: temporal attention per column, then spatial attention per row with the same
  q and k and the temporal output as values; one output projection (`out_proj`);
- the position table (`pos_embedding`, one entry per cell of the (T+1) x (S+1) grid) is
  added to the normalised input of the attention (so to q, k and v: their `value`
  argument is unused), never to the residual tokens, in the first layer only, or in every
  layer for 16-frame models (their `pos_embedding_layer_wise`);
- separate temporal (`cls_t`, row 0) and spatial (`cls_s`, column 0) class tokens,
  LayerNorm eps 1e-5, ReLU MLP (`linear1` / `linear2`), final `encoder.norm`, `fc`.

The head count leaves no trace in the shapes: pass `--arch num_heads=12` for their
ViT-B models when the 64-channels-per-head default does not fit. Their compact model
(C-VidTr) converts into the vidtr-compact family (vidtr_compact.py here); their
`merge_later` variant is another module and is not converted.

Mapped from the key names of the authors' public code and tested on a checkpoint with
that layout built in the tests, not on the released files.
"""

from __future__ import annotations

from typing import Any

import torch

from vidcls.zoo.convert.keys import compile_rules, rename_state

FAMILY = "vidtr"
SIGNATURE = ("conv_stem.weight", "cls_s", "cls_t", "pos_embedding")

# The stem, blocks and head, named alike in their split and compact models (the compact
# model's late nn.MultiheadAttention layers use the same in_proj / out_proj names).
SHARED_RULES = [
    (r"^conv_stem\.", "patch_embed.proj."),
    (r"^pos_embedding$", "pos_embed"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.in_proj_weight$", r"blocks.\1.attn.qkv.weight"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.in_proj_bias$", r"blocks.\1.attn.qkv.bias"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.linear1\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.(\d+)\.linear2\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layers\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^encoder\.norm\.", "norm."),
    (r"^fc\.", "head."),
]
_RULES = compile_rules([(r"^cls_s$", "cls_s"), (r"^cls_t$", "cls_t"), *SHARED_RULES])


def matches(state: dict[str, torch.Tensor]) -> bool:
    return all(key in state for key in SIGNATURE)


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The authors' state dict -> (ours, their keys we have no place for)."""
    return rename_state(state, _RULES)


def arch_hints(state: dict[str, torch.Tensor], given: dict[str, Any]) -> dict[str, Any]:
    """What their code fixes rather than their tensors' shapes, given the converted state dict
    (and the user's --arch, which this layout does not need).

    (Frames and image size are read off cls_s / cls_t by `infer_arch`.)
    """
    frames = int(state["cls_s"].shape[0])
    return {"attention": "shared", "embedding": "attention_input", "pos_every_layer": frames == 16,
            "layer_norm_eps": 1e-5, "mlp_activation": "relu"}
