"""Divided space-time attention (TimeSformer layout) against per-position / per-frame loops.

The interface, training, bf16 and interpolation checks shared by every family are in
test_model_interface.py.
"""

import torch

from vidcls.models import build_model

ARCH = {"num_classes": 4, "num_frames": 4, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2,
        "num_heads": 4, "zero_init_temporal_fc": False}


def block_by_hand(block, tokens, frames, attend):
    """One divided block on (B, 1 + T*S, C) tokens with explicit loops over clips, positions and frames."""
    outputs = []
    for clip in tokens:
        cls, patches = clip[0], clip[1:].reshape(frames, -1, clip.shape[-1])
        after_time = patches.clone()
        for pos in range(patches.shape[1]):
            seq = block.temporal_norm(patches[:, pos])
            q, k, v = block.temporal_attn.qkv(seq).chunk(3, dim=-1)
            after_time[:, pos] = patches[:, pos] + block.temporal_fc(attend(block.temporal_attn, q, k, v))
        after_space, cls_updates = after_time.clone(), []
        for t in range(frames):
            seq = block.norm1(torch.cat([cls[None], after_time[t]]))
            q, k, v = block.attn.qkv(seq).chunk(3, dim=-1)
            out = attend(block.attn, q, k, v)
            cls_updates.append(out[0])
            after_space[t] = after_time[t] + out[1:]
        seq = torch.cat([(cls + torch.stack(cls_updates).mean(dim=0))[None], after_space.flatten(0, 1)])
        outputs.append(seq + block.mlp(block.norm2(seq)))
    return torch.stack(outputs)


def test_divided_model_matches_loops(attend_by_hand):
    torch.manual_seed(0)
    model = build_model("divided", ARCH).eval()
    video = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        tokens, frames = model.embed(video)
        for block in model.blocks:
            expected = block_by_hand(block, tokens, frames, attend_by_hand)
            tokens = block(tokens, frames)
            assert torch.allclose(tokens, expected, atol=1e-5)
        assert torch.allclose(model(video), model.head(model.norm(expected[:, 0])), atol=1e-5)


def test_embedding_adds_space_and_time_tables():
    torch.manual_seed(0)
    model = build_model("divided", ARCH).eval()
    video = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        tokens, _ = model.embed(video)
        patches = model.patch_embed.proj(video)[0]  # (C, T, h, w)
        t, row, col = 2, 1, 3
        expected = patches[:, t, row, col] + model.pos_embed[0, 1 + row * 4 + col] + model.time_embed[0, t]
        assert torch.allclose(tokens[0, 1 + t * 16 + row * 4 + col], expected, atol=1e-6)
        assert torch.allclose(tokens[0, 0], (model.cls_token + model.pos_embed[:, 0])[0, 0])


def test_temporal_fc_starts_at_zero_after_the_first_block():
    model = build_model("divided", {**ARCH, "zero_init_temporal_fc": True})
    assert model.blocks[0].temporal_fc.weight.abs().sum() > 0
    assert all(block.temporal_fc.weight.abs().sum() == 0 for block in model.blocks[1:])
