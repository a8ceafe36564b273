"""Checkpoints in the papers' authors' layouts, built in the tests (no released file is used).

Shared by the converter tests (exact logits against a plain re-implementation of the
authors' forward) and the zoo tests (the same layouts served over HTTP, and the zoo's
architectures checked against the shapes of the authors' full-size models). The key names
and shapes are those of the authors' public code: X-ViT's SlowFast model
(1adrianb/video-transformers), VidTr's `vidtr_split.py` and `vidtr_compact.py`
(amazon-science/gluonmm).
"""

from __future__ import annotations

import torch


def to_xvit_authors_layout(state: dict) -> dict:
    """Our xvit state dict renamed, key by key, to the names of the authors' SlowFast model."""
    renames = {"patch_embed.": "base_model.patch_embed.", "cls_token": "base_model.cls_token",
               "pos_embed": "base_model.pos_embed", "time_embed": "base_model.temp_embed",
               "blocks.": "base_model.blocks.", "norm.": "base_model.norm.", "head.token": "consensus.cls_token",
               "head.block.": "consensus.temporal_encoder.0.", "head.norm.": "consensus.mlp_head.0.",
               "head.fc1.": "consensus.mlp_head.1.", "head.fc2.": "consensus.mlp_head.4."}
    theirs = {}
    for key, tensor in state.items():
        if key == "head.block.attn.qkv.bias":
            continue  # their temporal head is built with qkv_bias=False
        prefix = next(p for p in renames if key.startswith(p))
        theirs[renames[prefix] + key[len(prefix):]] = tensor
    theirs["base_model.patch_embed.proj.weight"] = theirs["base_model.patch_embed.proj.weight"].squeeze(2)
    return theirs


def _tensors(seed: int, meta: bool):
    """rand(*shape, scale): random tensors from a fixed seed, or shape-only ones on the meta device."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        if meta:
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * scale

    return rand


def vidtr_authors_state(c: int, depth: int, frames: int, patches: int, patch: int, classes: int,
                        mlp: int | None = None, meta: bool = False) -> dict:
    """A random state dict with the key names and shapes of the authors' VidTr (vidtr_split.py).

    mlp: the MLP's hidden width (default 2 c, small for tests; their ViT-B uses 4 c);
    meta: shapes only (full-size models cost nothing).
    """
    rand, hidden = _tensors(1, meta), mlp or 2 * c
    state = {"conv_stem.weight": rand(c, 3, 1, patch, patch, scale=0.05), "conv_stem.bias": rand(c),
             "cls_s": rand(frames, 1, c), "cls_t": rand(1, patches + 1, c),
             "pos_embedding": rand(1, (frames + 1) * (patches + 1), c),
             "encoder.norm.weight": 1 + rand(c), "encoder.norm.bias": rand(c),
             "fc.weight": rand(classes, c), "fc.bias": rand(classes)}
    for i in range(depth):
        layer = f"encoder.layers.{i}."
        state |= {layer + "self_attn.in_proj_weight": rand(3 * c, c), layer + "self_attn.in_proj_bias": rand(3 * c),
                  layer + "self_attn.out_proj.weight": rand(c, c), layer + "self_attn.out_proj.bias": rand(c),
                  layer + "linear1.weight": rand(hidden, c), layer + "linear1.bias": rand(hidden),
                  layer + "linear2.weight": rand(c, hidden), layer + "linear2.bias": rand(c),
                  layer + "norm1.weight": 1 + rand(c), layer + "norm1.bias": rand(c),
                  layer + "norm2.weight": 1 + rand(c), layer + "norm2.bias": rand(c)}
    return state


def compact_authors_state(c: int, depth: int, frames: int, patches: int, patch: int, classes: int,
                          mlp: int | None = None, meta: bool = False) -> dict:
    """A random state dict with the key names and shapes of the authors' C-VidTr (vidtr_compact.py)."""
    split = vidtr_authors_state(c, depth, frames, patches, patch, classes, mlp, meta)
    rand = _tensors(2, meta)
    state = {k: v for k, v in split.items() if k not in ("cls_s", "cls_t", "pos_embedding")}
    return state | {"cls": rand(1, 1, c), "pos_embedding": rand(1, 1 + frames * patches, c)}
