"""VidTr: separable attention and topK_std pooling against per-column / per-row / per-head loops.

The interface, training, bf16 and interpolation checks shared by every family are in
test_model_interface.py.
"""

import pytest
import torch

from vidcls.models import build_model
from vidcls.models.vidtr import topk_std_rows

ARCH = {"num_classes": 4, "num_frames": 6, "img_size": 12, "patch_size": 4, "embed_dim": 32, "depth": 2,
        "num_heads": 4, "head_dropout": 0.0}


def temporal_by_hand(block, column, attend, tau):
    """Temporal attention of one column (N, C); with tau, pooled per head by sorting row stds.

    Returns the attention output (K, C) and, per head, the kept rows (None without pooling).
    """
    attn, heads = block.temporal_attn, block.temporal_attn.num_heads
    q, k, v = attn.qkv(column).chunk(3, dim=-1)
    if tau is None or tau >= column.shape[0] - 1:
        return attend(attn, q, k, v), None
    width = q.shape[-1] // heads
    kept, outputs = [], []
    for head in range(heads):
        cols = slice(head * width, (head + 1) * width)
        affinity = torch.softmax(q[:, cols] @ k[:, cols].T / width ** 0.5, dim=-1)
        stds = [affinity[row].std().item() for row in range(1, column.shape[0])]
        best = sorted(range(len(stds)), key=lambda i: stds[i], reverse=True)[:tau]
        rows = [0] + sorted(i + 1 for i in best)
        kept.append(rows)
        outputs.append(affinity[rows] @ v[:, cols])
    return attn.proj(torch.cat(outputs, dim=-1)), kept


def pooled_residual_by_hand(column, kept, mode):
    """The residual of one column (N, C) restricted to the rows each head kept."""
    width = column.shape[-1] // len(kept)
    if mode == "head":
        return torch.cat([column[rows, h * width:(h + 1) * width] for h, rows in enumerate(kept)], dim=-1)
    return torch.stack([column[rows] for rows in kept]).mean(dim=0)


def block_by_hand(block, grid, attend, separate=False):
    """One VidTr block on a (B, T+1, S+1, C) grid: a loop over columns, then a loop over rows."""
    outputs = []
    for clip in grid:
        columns_out, residual = [], []
        for s in range(clip.shape[1]):
            column = clip[:, s]
            norm = block.temporal_norm if separate else block.norm1
            mixed, kept = temporal_by_hand(block, norm(column), attend, block.tau)
            columns_out.append(mixed)
            residual.append(column if kept is None else pooled_residual_by_hand(column, kept, block.residual_pool))
        mixed, x = torch.stack(columns_out, dim=1), torch.stack(residual, dim=1)  # (K, S+1, C)
        if separate:
            x = x + mixed
            mixed = block.norm1(x)
        rows = []
        for t in range(x.shape[0]):
            q, k, v = block.attn.qkv(mixed[t]).chunk(3, dim=-1)
            rows.append(x[t] + attend(block.attn, q, k, v))
        x = torch.stack(rows)
        outputs.append(x + block.mlp(block.norm2(x)))
    return torch.stack(outputs)


@pytest.mark.parametrize("options", [
    {},
    {"separate_residuals": True},
    {"pool_layers": [0, 1], "pool_tau": [4, 2]},
    {"pool_layers": [0, 1], "pool_tau": [3, 2], "residual_pool": "mean", "separate_residuals": True},
])
def test_blocks_match_loops(options, attend_by_hand):
    torch.manual_seed(0)
    model = build_model("vidtr", {**ARCH, **options}).eval()
    video = torch.randn(2, 3, 6, 12, 12)
    with torch.no_grad():
        grid = model.embed(video)
        assert grid.shape == (2, 7, 10, 32)
        for block, tau in zip(model.blocks, options.get("pool_tau", [None, None]), strict=True):
            expected = block_by_hand(block, grid, attend_by_hand, options.get("separate_residuals", False))
            grid = block(grid)
            assert grid.shape[1] == (7 if tau is None else tau + 1)
            assert torch.allclose(grid, expected, atol=1e-5)
        assert torch.allclose(model(video), model.head(model.norm(expected[:, 0, 0])), atol=1e-5)


def test_topk_std_rows_match_sorting_each_head_and_position():
    torch.manual_seed(0)
    q, k = torch.randn(2, 5, 3, 9, 8) * 2, torch.randn(2, 5, 3, 9, 8) * 2  # (B, S, H, T+1, d)
    rows = topk_std_rows(q, k, 4)
    assert rows.shape == (2, 5, 3, 5)
    for index in torch.cartesian_prod(torch.arange(2), torch.arange(5), torch.arange(3)).tolist():
        affinity = torch.softmax(q[tuple(index)] @ k[tuple(index)].T / 8 ** 0.5, dim=-1)
        stds = [affinity[row].std().item() for row in range(1, 9)]
        best = sorted(range(8), key=lambda i: stds[i], reverse=True)[:4]
        assert rows[tuple(index)].tolist() == [0] + sorted(i + 1 for i in best)
    assert len({tuple(r) for r in rows.flatten(0, 2).tolist()}) > 1  # choices do differ per head / position


def test_embedding_puts_class_tokens_on_row_and_column_zero():
    torch.manual_seed(0)
    model = build_model("vidtr", ARCH).eval()
    video = torch.randn(1, 3, 6, 12, 12)
    with torch.no_grad():
        grid = model.embed(video)[0]
        patches = model.patch_embed.proj(video)[0]  # (C, T, h, w)
        cls, pos, time = model.cls_token[0, 0], model.pos_embed[0], model.time_embed[0]
        assert torch.allclose(grid[0, 0], cls + pos[0] + time[0])
        assert torch.allclose(grid[0, 5], cls + pos[5] + time[0])  # a temporal class token
        assert torch.allclose(grid[4, 0], cls + pos[0] + time[4])  # a spatial class token
        assert torch.allclose(grid[4, 1 + 2 * 3 + 1], patches[:, 3, 2, 1] + pos[1 + 2 * 3 + 1] + time[4], atol=1e-6)


def test_pool_config_is_checked():
    with pytest.raises(ValueError, match="pair up"):
        build_model("vidtr", {**ARCH, "pool_layers": [0, 1], "pool_tau": [4]})
    with pytest.raises(ValueError, match="pool layers"):
        build_model("vidtr", {**ARCH, "pool_layers": [5], "pool_tau": [4]})
    with pytest.raises(ValueError, match="residual_pool"):
        build_model("vidtr", {**ARCH, "residual_pool": "max"})


SHARED = {**ARCH, "attention": "shared", "embedding": "attention_input"}


def shared_block_by_hand(block, grid, pos):
    """The authors' block on a (B, T+1, S+1, C) grid: one q/k/v from LN(x) + pos; per head, attention
    in every column, then in every row with the same q, k and the column outputs as values."""
    heads = block.attn.num_heads
    outputs = []
    for clip in grid:
        h = block.norm1(clip) + (0 if pos is None else pos[0])
        q, k, v = block.attn.qkv(h).chunk(3, dim=-1)
        width = q.shape[-1] // heads
        merged = torch.zeros_like(clip)
        for head in range(heads):
            cols = slice(head * width, (head + 1) * width)
            temporal = torch.zeros(clip.shape[0], clip.shape[1], width)
            for s in range(clip.shape[1]):
                affinity = torch.softmax(q[:, s, cols] @ k[:, s, cols].T / width ** 0.5, dim=-1)
                temporal[:, s] = affinity @ v[:, s, cols]
            for t in range(clip.shape[0]):
                affinity = torch.softmax(q[t, :, cols] @ k[t, :, cols].T / width ** 0.5, dim=-1)
                merged[t, :, cols] = affinity @ temporal[t]
        x = clip + block.attn.proj(merged)
        outputs.append(x + block.mlp(block.norm2(x)))
    return torch.stack(outputs)


@pytest.mark.parametrize("options", [{}, {"pos_every_layer": True}, {"embedding": "tokens"}])
def test_shared_attention_blocks_match_loops(options):
    torch.manual_seed(0)
    model = build_model("vidtr", {**SHARED, **options}).eval()
    assert not any("temporal_attn" in name for name, _ in model.named_parameters())
    video = torch.randn(2, 3, 6, 12, 12)
    with torch.no_grad():
        if model.config.embedding == "tokens":
            grid, pos = model.embed(video), None
        else:
            grid, pos = model.embed_attention_input(video)
            assert pos.shape == (1, 7, 10, 32)
            assert torch.allclose(grid[:, 0], model.cls_t.expand(2, -1, -1))  # row 0: temporal class tokens
            assert torch.allclose(grid[:, 1:, 0], model.cls_s[:, 0].expand(2, -1, -1))  # column 0: spatial
        assert grid.shape == (2, 7, 10, 32)
        for i, block in enumerate(model.blocks):
            block_pos = pos if i == 0 or options.get("pos_every_layer") else None
            expected = shared_block_by_hand(block, grid, block_pos)
            grid = block(grid, block_pos)
            assert torch.allclose(grid, expected, atol=1e-5)
        assert torch.allclose(model(video), model.head(model.norm(expected[:, 0, 0])), atol=1e-5)


def test_shared_attention_options_are_checked():
    with pytest.raises(ValueError, match="pooling"):
        build_model("vidtr", {**SHARED, "pool_layers": [0], "pool_tau": [2]})
    with pytest.raises(ValueError, match="needs attention='shared'"):
        build_model("vidtr", {**ARCH, "embedding": "attention_input"})
    with pytest.raises(ValueError, match="pos_every_layer"):
        build_model("vidtr", {**ARCH, "pos_every_layer": True})
    with pytest.raises(ValueError, match="attention = .joint. must be one of"):
        build_model("vidtr", {**ARCH, "attention": "joint"})
    with pytest.raises(ValueError, match="runs on 6 frames"):
        build_model("vidtr", SHARED)(torch.randn(1, 3, 4, 12, 12))
