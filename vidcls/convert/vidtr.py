"""The VidTr authors' checkpoint layout (amazon-research/gluonmm, vidtr_split.py): recognised, refused.

Their key names (`conv_stem`, `cls_s` / `cls_t`, one `pos_embedding` over the whole
(T+1) x (S+1) grid, `encoder.layers.N.self_attn.in_proj_weight` / `out_proj`,
`linear1` / `linear2`, `norm1` / `norm2`, `fc`) do not describe the block our vidtr
family computes, so no renaming can give their logits:

- one q/k/v projection serves both attentions: spatial attention takes its queries and
  keys from the block input and its values from the temporal attention's output, with a
  single output projection; ours projects the temporal output again (own q, k, v, proj);
- the position table is added to the normalised input of the attention (which projects
  q, k and v all from it: the `value` argument is unused), never to the residual tokens, in
  the first layer only (every layer for 16-frame models); ours is added to the tokens once;
- separate temporal and spatial class tokens, and LayerNorm eps 1e-5.

Converting anyway would write a model that loads but predicts nonsense. This module
exists to say so precisely instead of reporting a heap of unexpected keys.
"""

from __future__ import annotations

import torch

from ..errors import VidclsError

SIGNATURE = ("conv_stem.weight", "cls_s", "cls_t", "pos_embedding")


def matches(state: dict[str, torch.Tensor]) -> bool:
    return all(key in state for key in SIGNATURE)


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    raise VidclsError("this is a VidTr checkpoint in the authors' layout (gluonmm), whose attention block "
                      "(q/k/v shared by temporal and spatial attention, positions added to the attention input, not the tokens) "
                      "the vidcls vidtr family does not compute, so it cannot be converted exactly")
