"""LVT (ff-linear) and its plain linear baseline: every efficient piece against a plain reference.

The interface, training, bf16 and interpolation checks shared by every family are in
test_model_interface.py.
"""

import math
import warnings
from functools import partial

import pytest
import torch

from vidcls.models import build_model
from vidcls.models.ff_linear import FeatureFixation, FixationLinearAttention
from vidcls.models.layers import (
    ConvMlp,
    linear_attention,
    neighbour_shift_2d,
    relu_feature_map,
    temporal_channel_shift,
)
from vidcls.zoo.resolve import load_model

EPS = 1e-6
# (row, column) offsets read by the 8 channel groups: up, down, left, right, then the diagonals
NEIGHBOURS = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


# ---------------------------------------------------------------- plain references


def phi(z):
    return torch.clamp(z, min=0) + 1 / math.sqrt(z.shape[-1])


def quadratic_linear_attention(fq, fk, v):
    """The N x N form: phi(Q) phi(K)^T V / (phi(Q) phi(K)^T 1 + eps), from feature-mapped q, k."""
    scores = fq @ fk.transpose(-1, -2)
    return (scores @ v) / (scores.sum(dim=-1, keepdim=True) + EPS)


def gate_by_hand(linear, fq, fk, v):
    return torch.sigmoid(torch.cat([fq, fk, v], dim=-1) @ linear.weight.T + linear.bias)


def shift_frames_by_hand(x, fold_div, dim):
    """Frame t = [channels :fold of t+1 | fold:2fold of t-1 | rest of t], zeros outside the clip."""
    frames = x.movedim(dim, 0)
    fold = x.shape[-1] // fold_div
    zero = torch.zeros_like(frames[0])
    out = []
    for t in range(frames.shape[0]):
        after = frames[t + 1] if t + 1 < frames.shape[0] else zero
        before = frames[t - 1] if t > 0 else zero
        out.append(torch.cat([after[..., :fold], before[..., fold:2 * fold], frames[t][..., 2 * fold:]], dim=-1))
    return torch.stack(out).movedim(0, dim)


def shift_grid_by_hand(x, grid):
    """Token (i, j), channel group g < 8 reads token (i + di_g, j + dj_g) or zero off the grid."""
    h, w = grid
    group = x.shape[-1] // 16
    out = x.clone()
    for i in range(h):
        for j in range(w):
            for g, (di, dj) in enumerate(NEIGHBOURS):
                channels = slice(g * group, (g + 1) * group)
                inside = 0 <= i + di < h and 0 <= j + dj < w
                out[..., i * w + j, channels] = x[..., (i + di) * w + (j + dj), channels] if inside else 0
    return out


def attention_by_hand(attn, x, axis, shift, heads):
    """One attention branch of an LVT block on (B, T, S, C), sequence by sequence and head by head."""
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, dim=-1)
    if shift is not None:
        k, v = shift(k), shift(v)
    batch, frames, tokens, width = x.shape
    d = width // heads
    out = torch.zeros_like(x)
    for b in range(batch):
        for other in range(tokens if axis == 1 else frames):
            index = (b, slice(None), other) if axis == 1 else (b, other, slice(None))
            for h in range(heads):
                channels = slice(h * d, (h + 1) * d)
                fq, fk, vv = phi(q[index][:, channels]), phi(k[index][:, channels]), v[index][:, channels]
                if attn.fixation is not None:
                    gq = gate_by_hand(attn.fixation.gate_q, fq, fk, vv)
                    gk = gq if attn.fixation.gate_k is None else gate_by_hand(attn.fixation.gate_k, fq, fk, vv)
                    fq, fk = gq * fq, gk * fk
                out[index + (channels,)] = quadratic_linear_attention(fq, fk, vv)
    return out @ attn.proj.weight.T + attn.proj.bias


def randomise(module):
    """Random values everywhere, biases included (they start at zero)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


# ---------------------------------------------------------------- layers


def test_feature_map_is_relu_plus_offset():
    z = torch.randn(3, 5, 16)
    assert torch.equal(relu_feature_map(z), torch.relu(z) + 0.25)


def test_linear_attention_matches_quadratic_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 37, 16), torch.randn(2, 3, 37, 16), torch.randn(2, 3, 37, 16)
    fq, fk = relu_feature_map(q), relu_feature_map(k)
    assert torch.allclose(linear_attention(fq, fk, v, EPS), quadratic_linear_attention(fq, fk, v), atol=1e-5)


def test_linear_attention_never_builds_the_token_by_token_matrix():
    n = 200_000  # an N x N fp32 matrix would need 160 GB
    q, k, v = (relu_feature_map(torch.randn(1, n, 8)) for _ in range(3))
    assert linear_attention(q, k, v).shape == (1, n, 8)


@pytest.mark.parametrize("shared", [False, True])
def test_fixation_gates_match_formula(shared):
    torch.manual_seed(0)
    fixation = randomise(FeatureFixation(head_dim=8, shared=shared))
    fq, fk, v = phi(torch.randn(2, 4, 10, 8)), phi(torch.randn(2, 4, 10, 8)), torch.randn(2, 4, 10, 8)
    gq = gate_by_hand(fixation.gate_q, fq, fk, v)
    gk = gq if shared else gate_by_hand(fixation.gate_k, fq, fk, v)
    q_out, k_out = fixation(fq, fk, v)
    assert torch.allclose(q_out, gq * fq, atol=1e-6)
    assert torch.allclose(k_out, gk * fk, atol=1e-6)
    assert shared == (fixation.gate_k is None)


@pytest.mark.parametrize(("shape", "dim", "fold_div"), [((2, 5, 7, 16), 1, 8), ((2, 5, 16), 1, 4),
                                                        ((2, 3, 6, 12), 2, 4), ((1, 1, 3, 8), 1, 4)])
def test_temporal_shift_matches_slices_by_hand(shape, dim, fold_div):
    x = torch.randn(shape)
    assert torch.equal(temporal_channel_shift(x, fold_div, dim=dim), shift_frames_by_hand(x, fold_div, dim))


def test_temporal_shift_rejects_overlapping_folds():
    with pytest.raises(ValueError, match="fold_div"):
        temporal_channel_shift(torch.randn(1, 4, 8), 1)


@pytest.mark.parametrize(("grid", "channels"), [((4, 5), 32), ((3, 3), 40), ((1, 2), 16)])
def test_neighbour_shift_matches_lookup_by_hand(grid, channels):
    x = torch.randn(2, 3, grid[0] * grid[1], channels)
    assert torch.equal(neighbour_shift_2d(x, grid), shift_grid_by_hand(x, grid))


def test_conv_mlp_matches_per_frame_conv():
    torch.manual_seed(0)
    mlp = ConvMlp(dim=8, hidden=16).eval()
    x = torch.randn(2, 3, 12, 8)  # (B, T, S, C), a 3 x 4 grid per frame
    hidden = mlp.fc1(x).reshape(6, 3, 4, 16).permute(0, 3, 1, 2)
    hidden = torch.nn.functional.conv2d(hidden, mlp.dwconv.weight, mlp.dwconv.bias, padding=1, groups=16)
    expected = mlp.fc2(torch.nn.functional.gelu(hidden.permute(0, 2, 3, 1).reshape(2, 3, 12, 16)))
    assert torch.allclose(mlp(x, (3, 4)), expected, atol=1e-5)


# ---------------------------------------------------------------- attention branches


@pytest.mark.parametrize("shared_gate", [False, True])
@pytest.mark.parametrize("axis", [1, 2])
def test_attention_branch_with_fixation_and_association_matches_reference(axis, shared_gate):
    torch.manual_seed(0)
    grid = (3, 4)
    attn = randomise(FixationLinearAttention(dim=32, num_heads=2, qkv_bias=True, fixation=True,
                                             shared_gate=shared_gate, eps=EPS, proj_drop=0.0)).eval()
    shift = partial(neighbour_shift_2d, grid=grid) if axis == 1 else partial(temporal_channel_shift, fold_div=4)
    reference_shift = (partial(shift_grid_by_hand, grid=grid) if axis == 1
                       else partial(shift_frames_by_hand, fold_div=4, dim=1))
    x = torch.randn(2, 5, 12, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x, axis, shift), attention_by_hand(attn, x, axis, reference_shift, 2),
                              atol=1e-5)


def test_plain_temporal_attention_is_per_position_linear_attention():
    torch.manual_seed(0)
    block = randomise(load_model("linear-tiny", allow_random=True).module.blocks[0])
    x = torch.randn(2, 8, 64, 64)
    with torch.no_grad():
        out = block.temporal_attn(x, axis=1)
        assert torch.allclose(out, attention_by_hand(block.temporal_attn, x, 1, None, 4), atol=1e-5)
        # each spatial position is its own sequence: disturbing one leaves all others unchanged
        disturbed = x.clone()
        disturbed[:, :, 9] += 1.0
        changed = (block.temporal_attn(disturbed, axis=1) - out).abs().amax(dim=(0, 1, 3)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [9]


def test_association_lets_temporal_attention_see_the_grid_neighbours():
    torch.manual_seed(0)
    model = load_model("ff-linear-tiny", allow_random=True).module
    block, grid = randomise(model.blocks[0]), (8, 8)
    x = torch.randn(1, 8, 64, 64)
    disturbed = x.clone()
    disturbed[:, :, 9] += 1.0  # grid cell (1, 1)
    shift = partial(neighbour_shift_2d, grid=grid)
    with torch.no_grad():
        diff = block.temporal_attn(disturbed, 1, shift) - block.temporal_attn(x, 1, shift)
    changed = diff.abs().amax(dim=(0, 1, 3)) > 1e-6
    rows, cols = changed.nonzero().flatten().div(8, rounding_mode="floor"), changed.nonzero().flatten() % 8
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(r, c) for r in range(3) for c in range(3)]


# ---------------------------------------------------------------- whole models


def test_linear_baseline_is_the_same_backbone_without_fixation_or_association():
    lvt = load_model("ff-linear-tiny", allow_random=True).module
    plain = load_model("linear-tiny", allow_random=True).module
    assert all(block.neighbourhood and block.temporal_attn.fixation is not None for block in lvt.blocks)
    assert not any(block.neighbourhood or block.spatial_attn.fixation is not None for block in plain.blocks)
    assert {n for n in lvt.state_dict() if ".fixation." not in n} == set(plain.state_dict())


def test_any_frame_size_runs_without_interpolation():
    """No spatial position embedding: only another frame count interpolates (test_model_interface)."""
    model = load_model("ff-linear-tiny", allow_random=True).module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")
        assert model(torch.randn(1, 3, 8, 40, 48)).shape == (1, 4)


def test_config_is_checked():
    tiny = {"num_frames": 4, "img_size": 16, "patch_kernel": 4, "patch_stride": 4, "patch_padding": 0,
            "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_hidden": 64}
    with pytest.raises(ValueError, match="shift_div"):
        build_model("ff-linear", {**tiny, "shift_div": 1})
    with pytest.raises(ValueError, match="divisible"):
        build_model("ff-linear", {**tiny, "num_heads": 3})
    with pytest.raises(ValueError, match="does not fit"):
        build_model("ff-linear", {**tiny, "patch_kernel": 40})
    with pytest.raises(ValueError, match="expected a video"):
        build_model("ff-linear", tiny)(torch.randn(1, 4, 4, 16, 16))
