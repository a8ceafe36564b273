"""X-ViT: space-time mixing against explicit channel concatenation and per-frame attention loops.

The interface, training, bf16 and interpolation checks shared by every family are in
test_model_interface.py.
"""

import pytest
import torch

from vidcls.models import build_model
from vidcls.models.xvit import SpaceTimeMixingAttention, mix_within_groups

ARCH = {"num_classes": 4, "num_frames": 8, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 4,
        "num_heads": 4, "head_hidden": 32, "head_dropout": 0.0}


def mix_by_hand(x, fold_div, group=0):
    """Frame t of x (B, T, N, C) rebuilt as [t+1 | t-1 | t] channel slices, zeros off the clip and
    where the neighbour lies in another group of `group` consecutive frames (0: one group)."""
    fold, frames = x.shape[-1] // fold_div, x.shape[1]
    group = group or frames
    zeros = torch.zeros_like(x[:, 0])
    mixed = []
    for t in range(frames):
        later = x[:, t + 1] if t + 1 < frames and (t + 1) // group == t // group else zeros
        earlier = x[:, t - 1] if t > 0 and (t - 1) // group == t // group else zeros
        mixed.append(torch.cat([later[..., :fold], earlier[..., fold:2 * fold], x[:, t, ..., 2 * fold:]], dim=-1))
    return torch.stack(mixed, dim=1)


def mixing_attention_by_hand(attn, x, attend, summary):
    """Per clip and frame: queries of frame t against mixed keys / values (plus every frame's summary)."""
    q, k, v = attn.qkv(x).chunk(3, dim=-1)  # (B, T, N, C) each
    mixed_k, mixed_v = mix_by_hand(k, attn.shift_div), mix_by_hand(v, attn.shift_div)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            keys, values = mixed_k[b, t], mixed_v[b, t]
            if summary:
                keys = torch.cat([keys] + [k[b, s, 1:].mean(dim=0, keepdim=True) for s in range(x.shape[1])])
                values = torch.cat([values] + [v[b, s, 1:].mean(dim=0, keepdim=True) for s in range(x.shape[1])])
            out[b, t] = attend(attn, q[b, t], keys, values)
    return out


@pytest.mark.parametrize("fold_div", [8, 4])
def test_mixed_keys_and_values_are_channel_slices_of_neighbour_frames(fold_div):
    torch.manual_seed(0)
    attn = SpaceTimeMixingAttention(dim=32, num_heads=4, qkv_bias=True, proj_drop=0.0, shift_div=fold_div,
                                    summary_tokens=False)
    x = torch.randn(2, 5, 7, 32)
    _, k, _ = attn.heads_qkv(x)  # (B, T, H, N, d)
    plain_k = attn.qkv(x).chunk(3, dim=-1)[1]  # (B, T, N, C)
    expected = mix_by_hand(plain_k, fold_div).unflatten(-1, (4, 8)).transpose(2, 3)
    assert torch.allclose(attn.mix(k), expected, atol=1e-5)


@pytest.mark.parametrize("frames, group", [(16, 8), (16, 4), (6, 6), (6, 0), (4, 1)])
def test_mixing_stays_within_groups_of_num_segments_frames(frames, group):
    torch.manual_seed(0)
    x = torch.randn(2, frames, 3, 16)
    assert torch.equal(mix_within_groups(x, 4, group), mix_by_hand(x, 4, group))


def test_mixing_groups_must_tile_the_clip():
    with pytest.raises(ValueError, match="6 frames is not a whole number of 4-frame mixing groups"):
        mix_within_groups(torch.zeros(1, 6, 2, 8), 4, 4)
    with pytest.raises(ValueError, match="num_frames 8 is not a whole number of num_segments 3"):
        build_model("xvit", {**ARCH, "num_segments": 3})


@pytest.mark.parametrize("summary", [False, True])
def test_mixing_attention_matches_per_frame_loops(summary, attend_by_hand):
    torch.manual_seed(0)
    attn = SpaceTimeMixingAttention(dim=32, num_heads=4, qkv_bias=True, proj_drop=0.0, shift_div=4,
                                    summary_tokens=summary).eval()
    x = torch.randn(2, 5, 7, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x), mixing_attention_by_hand(attn, x, attend_by_hand, summary), atol=1e-5)


def changed_frames_per_layer(options):
    """Perturb frame 3 of an 8-frame clip; per layer, the frames whose tokens change at all.

    A frame out of reach is computed from the very same numbers, so it stays bitwise equal;
    one in reach may change by as little as 1e-7 a few layers away, so no tolerance is used.
    """
    torch.manual_seed(0)
    model = build_model("xvit", {**ARCH, **options}).eval()
    video = torch.randn(1, 3, 8, 16, 16)
    moved = video.clone()
    moved[:, :, 3] += 1.0
    changed = []
    with torch.no_grad():
        a, b = model.embed(video), model.embed(moved)
        for block in model.blocks:
            a, b = block(a), block(b)
            changed.append([t for t in range(8) if not torch.equal(a[:, t], b[:, t])])
    return changed


def test_without_mixing_frames_are_independent():
    assert changed_frames_per_layer({"shift_div": 0}) == [[3]] * 4


def test_mixing_reaches_one_more_frame_each_layer():
    assert changed_frames_per_layer({"shift_div": 8}) == [[2, 3, 4], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6],
                                                          list(range(8))]


def test_mixing_groups_keep_frames_in_their_group():
    """Two groups of 4 (their K600 grouping, halved): frame 3 never reaches frames 4..7."""
    assert changed_frames_per_layer({"shift_div": 8, "num_segments": 4}) == [[2, 3], [1, 2, 3], [0, 1, 2, 3],
                                                                              [0, 1, 2, 3]]


def test_summary_tokens_connect_all_frames_in_one_layer():
    assert changed_frames_per_layer({"shift_div": 0, "summary_tokens": True})[0] == list(range(8))


def test_temporal_attention_head_reads_the_learnable_token_and_the_frame_class_tokens():
    torch.manual_seed(0)
    model = build_model("xvit", ARCH).eval()
    head, features = model.head, torch.randn(2, 8, 17, 32)  # (B, T, 1 + S, C): class token first
    with torch.no_grad():
        sequence = torch.cat([head.token.expand(2, -1, -1), features[:, :, 0]], dim=1)
        clip = head.block(sequence)[:, 0]
        expected = head.fc2(torch.nn.functional.gelu(head.fc1(head.norm(clip))))
        assert model.get_classifier() is head.fc2
        assert torch.allclose(model.forward_head(features), expected, atol=1e-6)
    assert {m.eps for m in head.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}  # the backbone's
    authors = build_model("xvit", {**ARCH, "head_layer_norm_eps": 1e-5}).head
    assert {m.eps for m in authors.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}


def test_mean_head_classifies_the_mean_frame_class_token_and_config_checks():
    torch.manual_seed(0)
    model = build_model("xvit", {**ARCH, "head": "mean"}).eval()
    features = torch.randn(2, 8, 17, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_head(features), model.head(features[:, :, 0].mean(dim=1)), atol=1e-6)
    with pytest.raises(ValueError, match="shift_div"):
        build_model("xvit", {**ARCH, "shift_div": 1})
    with pytest.raises(ValueError, match="head"):
        build_model("xvit", {**ARCH, "head": "max"})
