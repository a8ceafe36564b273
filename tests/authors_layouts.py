"""Checkpoints in the papers' authors' layouts, built in the tests (no released file is used).

Shared by the converter tests (exact logits against a plain re-implementation of the
authors' forward) and the zoo tests (the same layouts served over HTTP, and the zoo's
architectures checked against the shapes of the authors' full-size models). The key names,
shapes and dtypes (float32 throughout) are those of the authors' public code: X-ViT's
SlowFast model (1adrianb/video-transformers: slowfast/models/video_model_builder.py,
head_helper.py, transformers/vit.py, transformers/transformer_block.py), VidTr's
`vidtr_split.py` and `vidtr_compact.py` (amazon-science/gluonmm,
src/transformers/models/vidtr/). So are the files' wrappers: SlowFast's save_checkpoint
(slowfast/utils/checkpoint.py) and gluonmm's (src/transformers/utils/model_utils.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def _vit_block(rand, prefix: str, c: int, hidden: int, qkv_bias: bool) -> dict:
    """The tensors of one block of their transformer_block.Block (timm's names; the shift modules hold none)."""
    block = {prefix + "norm1.weight": 1 + rand(c), prefix + "norm1.bias": rand(c),
             prefix + "attn.qkv.weight": rand(3 * c, c), prefix + "attn.proj.weight": rand(c, c),
             prefix + "attn.proj.bias": rand(c), prefix + "norm2.weight": 1 + rand(c), prefix + "norm2.bias": rand(c),
             prefix + "mlp.fc1.weight": rand(hidden, c), prefix + "mlp.fc1.bias": rand(hidden),
             prefix + "mlp.fc2.weight": rand(c, hidden), prefix + "mlp.fc2.bias": rand(c)}
    return block | ({prefix + "attn.qkv.bias": rand(3 * c)} if qkv_bias else {})


def xvit_authors_state(c: int, depth: int, frames: int, classes: int, head_mlp: int, img: int = 224,
                       patch: int = 16, meta: bool = False) -> dict:
    """A random state dict with the key names and shapes of the authors' XVIT with its TA head.

    c: the ViT width (their TEMPORAL_HEAD.HIDDEN_DIM is the same 768); frames: DATA.NUM_FRAMES,
    the rows of temp_embed; head_mlp: TEMPORAL_HEAD.MLP_DIM. Their ViT's MLP is 4 c wide and
    its qkv has a bias, their head block's has none; with MODEL.DROPOUT_RATE > 0 the model also
    holds `new_fc`, which the TA head never calls; meta: shapes only.
    """
    rand = _tensors(3, meta)
    state = {"base_model.cls_token": rand(1, 1, c), "base_model.pos_embed": rand(1, (img // patch) ** 2 + 1, c),
             "base_model.temp_embed": rand(1, frames, 1, c),
             "base_model.patch_embed.proj.weight": rand(c, 3, patch, patch, scale=0.05),
             "base_model.patch_embed.proj.bias": rand(c),
             "base_model.norm.weight": 1 + rand(c), "base_model.norm.bias": rand(c),
             "new_fc.weight": rand(classes, c), "new_fc.bias": rand(classes),
             "consensus.cls_token": rand(1, 1, c),
             "consensus.mlp_head.0.weight": 1 + rand(c), "consensus.mlp_head.0.bias": rand(c),
             "consensus.mlp_head.1.weight": rand(head_mlp, c), "consensus.mlp_head.1.bias": rand(head_mlp),
             "consensus.mlp_head.4.weight": rand(classes, head_mlp), "consensus.mlp_head.4.bias": rand(classes)}
    for i in range(depth):
        state |= _vit_block(rand, f"base_model.blocks.{i}.", c, 4 * c, qkv_bias=True)
    return state | _vit_block(rand, "consensus.temporal_encoder.0.", c, 4 * c, qkv_bias=False)


def slowfast_saved(state: dict) -> dict:
    """What SlowFast's save_checkpoint writes: the model's state dict under model_state (no DDP prefix),
    the optimiser's state and the config as YAML text."""
    first = next(iter(state.values()))
    return {"epoch": 29, "model_state": state, "cfg": "XVIT:\n  NUM_SEGMENTS: 8\n",
            "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros_like(first)}},
                                "param_groups": [{"lr": 0.0, "momentum": 0.9, "params": [0]}]}}


def gluonmm_saved(state: dict) -> dict:
    """A checkpoint as gluonmm's load_model reads it: checkpoint['model'] keyed like the DDP-wrapped model
    ("module." prefix; unconfirmed for the released files), plus the epoch and best accuracy."""
    return {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 49, "max_accuracy": 77.7}


def xvit_authors_forward(state: dict, video: torch.Tensor, heads: int, num_segments: int,
                         shift_div: int) -> torch.Tensor:
    """The authors' XVIT forward (TA head) written out plainly: one clip, frame and head at a time.

    Keys and values of frame t take channels [0, fold) from frame t+1 and [fold, 2 fold) from
    frame t-1 only when that frame is in t's group of num_segments consecutive frames, else
    zeros; temp_embed's rows repeat over the clip (their view of the frames as rows of its
    length). The backbone's LayerNorms use eps 1e-6, the head's torch's default 1e-5.
    """
    patch = state["base_model.patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("base_model.blocks."))
    table = state["base_model.temp_embed"][0, :, 0]  # (E, C)

    def norm(x, name, eps):
        return F.layer_norm(x, x.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps=eps)

    def linear(x, name):
        bias = state.get(name + ".bias")
        return x @ state[name + ".weight"].T + (0 if bias is None else bias)

    def mix(x):  # (T, N, C) keys or values of one clip
        frames, fold = x.shape[0], x.shape[-1] // shift_div
        out = x.clone()
        out[..., :2 * fold] = 0
        for t in range(frames):
            for source, channels in ((t + 1, slice(0, fold)), (t - 1, slice(fold, 2 * fold))):
                if 0 <= source < frames and source // num_segments == t // num_segments:
                    out[t, :, channels] = x[source, :, channels]
        return out

    def block(x, prefix, eps, shift):  # x: (F, N, C), F sequences attending each within itself
        h = norm(x, prefix + "norm1", eps)
        q, k, v = linear(h, prefix + "attn.qkv").chunk(3, dim=-1)
        k, v = shift(k), shift(v)
        d = x.shape[-1] // heads
        attended = torch.empty_like(x)
        for f in range(x.shape[0]):
            for head in range(heads):
                sl = slice(head * d, (head + 1) * d)
                weights = torch.softmax(q[f, :, sl] @ k[f, :, sl].T * d ** -0.5, dim=-1)
                attended[f, :, sl] = weights @ v[f, :, sl]
        x = x + linear(attended, prefix + "attn.proj")
        return x + linear(F.gelu(linear(norm(x, prefix + "norm2", eps), prefix + "mlp.fc1")), prefix + "mlp.fc2")

    logits = []
    for clip in video:  # (3, T, H, W)
        frames = clip.shape[1]
        tokens = F.conv2d(clip.transpose(0, 1), state["base_model.patch_embed.proj.weight"],
                          state["base_model.patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
        x = torch.cat([state["base_model.cls_token"].expand(frames, -1, -1), tokens], dim=1)
        x = x + state["base_model.pos_embed"]
        x = x + torch.stack([table[t % len(table)] for t in range(frames)])[:, None]
        for i in range(depth):
            x = block(x, f"base_model.blocks.{i}.", 1e-6, mix)
        frame_tokens = norm(x, "base_model.norm", 1e-6)[:, 0]  # (T, C): each frame's class token
        sequence = torch.cat([state["consensus.cls_token"][0], frame_tokens])[None]
        token = block(sequence, "consensus.temporal_encoder.0.", 1e-5, lambda kv: kv)[0, 0]
        hidden = F.gelu(linear(norm(token, "consensus.mlp_head.0", 1e-5), "consensus.mlp_head.1"))
        logits.append(linear(hidden, "consensus.mlp_head.4"))
    return torch.stack(logits)
