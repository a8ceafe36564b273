"""The papers' own checkpoint layouts: X-ViT's and VidTr's convert exactly.

No released file is used: each test writes a checkpoint with the authors' key names (taken
from their public code), converts it and compares the logits with a plain re-implementation
of the authors' forward written in the tests.
"""

import pytest
import torch

from authors_layouts import (
    compact_authors_state,
    slowfast_saved,
    vidtr_authors_state,
    xvit_authors_forward,
    xvit_authors_state,
)
from vidcls.errors import UsageError, VidclsError
from vidcls.zoo.convert import convert_checkpoint, detect_layout, read_checkpoint
from vidcls.zoo.resolve import load_model


@pytest.mark.parametrize("frames, table, segments", [
    (8, 8, 4),  # their K600 config in small: two mixing groups, one time row per frame
    (8, 4, 4),  # a time table shorter than the clip repeats over it, as their view of the frames does
    (6, 6, 0),  # one group, the whole clip (their SSv2 config: NUM_SEGMENTS = NUM_FRAMES)
])
def test_xvit_authors_checkpoint_matches_their_forward(frames, table, segments, tmp_path):
    c, heads, size = 32, 4, 32
    state = xvit_authors_state(c, depth=2, frames=table, classes=6, head_mlp=24, img=size, patch=8)
    torch.save(slowfast_saved(state), tmp_path / "xvit_b16_16_k600.pth")
    arch = {"num_heads": heads, "shift_div": 4, "num_segments": segments, "num_frames": frames}
    report = convert_checkpoint(tmp_path / "xvit_b16_16_k600.pth", "xvit", tmp_path / "out", arch=arch)
    assert report.layout == "xvit" and not report.missing and not report.unexpected  # new_fc: built, never called
    loaded = load_model(str(tmp_path / "out"))
    assert {k: loaded.card.arch[k] for k in ("num_frames", "img_size", "head_hidden", "num_classes",
                                              "num_segments", "head_layer_norm_eps")} == \
        {"num_frames": frames, "img_size": size, "head_hidden": 24, "num_classes": 6, "num_segments": segments,
         "head_layer_norm_eps": 1e-5}
    torch.manual_seed(0)
    video = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
        expected = xvit_authors_forward(state, video, heads, segments or frames, shift_div=4)
        gap = (loaded.module(video) - expected).abs().max().item()
        assert gap <= 1e-5, gap
        if segments:  # the groups do matter: mixing across the whole clip gives other logits
            for attn in (block.attn for block in loaded.module.blocks):
                attn.num_segments = 0
            assert (loaded.module(video) - expected).abs().max().item() > 1e-3


def test_xvit_mixing_groups_must_tile_the_clip(tmp_path):
    torch.save(slowfast_saved(xvit_authors_state(32, 1, 8, 6, 24, img=32, patch=8)), tmp_path / "xvit.pth")
    with pytest.raises(VidclsError, match="num_frames 8 is not a whole number of num_segments 3"):
        convert_checkpoint(tmp_path / "xvit.pth", "xvit", tmp_path / "out", arch={"num_heads": 4, "num_segments": 3})
    assert not (tmp_path / "out").exists()


def test_ddp_prefix_and_wrappers_are_unwrapped(tmp_path):
    state = {f"module.{k}": v for k, v in xvit_authors_state(32, 1, 4, 6, 24, img=32, patch=8).items()}
    torch.save({"state_dict": state}, tmp_path / "ddp.pt")
    assert detect_layout(read_checkpoint(tmp_path / "ddp.pt")) == "xvit"


def vidtr_authors_forward(state: dict, video: torch.Tensor, heads: int) -> torch.Tensor:
    """The authors' VidTr forward written out plainly: token by token grid, column and row loops."""
    import torch.nn.functional as F

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps=1e-5)

    def attention(q, k, v):  # one head: (N, d) each
        return torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1) @ v

    stem = state["conv_stem.weight"]
    tokens = F.conv3d(video, stem, state["conv_stem.bias"], stride=stem.shape[2:])  # (B, C, T, h, w)
    batch, c, frames = tokens.shape[:3]
    tokens = tokens.flatten(3).permute(0, 2, 3, 1)  # (B, T, S, C), S row-major
    patches = tokens.shape[2]
    rows, cols, d = frames + 1, patches + 1, c // heads
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    logits = []
    for b in range(batch):
        x = torch.empty(rows, cols, c)
        x[0] = state["cls_t"][0]  # row 0: temporal class tokens, column 0 included
        for t in range(frames):
            x[t + 1, 0] = state["cls_s"][t, 0]
            x[t + 1, 1:] = tokens[b, t]
        pos = state["pos_embedding"][0].reshape(rows, cols, c)  # index row * (S+1) + col
        for i in range(depth):
            layer = f"encoder.layers.{i}."
            h = norm(x, layer + "norm1")
            if i == 0 or frames == 16:
                h = h + pos
            qkv = h @ state[layer + "self_attn.in_proj_weight"].T + state[layer + "self_attn.in_proj_bias"]
            q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
            merged = torch.empty(rows, cols, c)
            for head in range(heads):
                sl = slice(head * d, (head + 1) * d)
                temporal = torch.empty(rows, cols, d)
                for col in range(cols):
                    temporal[:, col] = attention(q[:, col, sl], k[:, col, sl], v[:, col, sl])
                for row in range(rows):
                    merged[row, :, sl] = attention(q[row, :, sl], k[row, :, sl], temporal[row])
            x = x + merged @ state[layer + "self_attn.out_proj.weight"].T + state[layer + "self_attn.out_proj.bias"]
            hidden = torch.relu(norm(x, layer + "norm2") @ state[layer + "linear1.weight"].T
                                + state[layer + "linear1.bias"])
            x = x + hidden @ state[layer + "linear2.weight"].T + state[layer + "linear2.bias"]
        final = norm(x, "encoder.norm")[0, 0]
        logits.append(final @ state["fc.weight"].T + state["fc.bias"])
    return torch.stack(logits)


@pytest.mark.parametrize("frames, size, every_layer", [(4, 32, False), (16, 16, True)])
def test_vidtr_authors_checkpoint_converts_to_identical_logits(frames, size, every_layer, tmp_path):
    c, heads, patch = 32, 4, 16
    state = vidtr_authors_state(c, depth=2, frames=frames, patches=(size // patch) ** 2, patch=patch, classes=5)
    torch.save({"epoch": 50, "model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "vidtr_s.pth")
    report = convert_checkpoint(tmp_path / "vidtr_s.pth", "vidtr", tmp_path / "out", arch={"num_heads": heads})
    assert report.layout == "vidtr" and not report.missing and not report.unexpected
    loaded = load_model(str(tmp_path / "out"))
    arch = loaded.card.arch
    assert {k: arch[k] for k in ("num_frames", "img_size", "num_classes", "depth", "attention", "embedding",
                                 "pos_every_layer", "layer_norm_eps", "mlp_activation")} == \
        {"num_frames": frames, "img_size": size, "num_classes": 5, "depth": 2, "attention": "shared",
         "embedding": "attention_input", "pos_every_layer": every_layer, "layer_norm_eps": 1e-5,
         "mlp_activation": "relu"}
    torch.manual_seed(0)
    video = torch.randn(2, 3, frames, size, size)
    model = loaded.module.eval()
    with torch.no_grad():
        expected = vidtr_authors_forward(state, video, heads)
        gap = (model(video) - expected).abs().max().item()
        assert gap <= 1e-4, gap
        if every_layer:  # positions at every layer do matter: without them the logits differ
            model.config.pos_every_layer = False
            assert (model(video) - expected).abs().max().item() > 1e-3


def test_vidtr_authors_checkpoint_refuses_another_family(tmp_path):
    state = vidtr_authors_state(32, depth=1, frames=4, patches=4, patch=16, classes=5)
    torch.save(state, tmp_path / "vidtr_s.pth")
    assert detect_layout(read_checkpoint(tmp_path / "vidtr_s.pth")) == "vidtr"
    with pytest.raises(UsageError, match="--family vidtr"):
        convert_checkpoint(tmp_path / "vidtr_s.pth", "xvit", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def compact_authors_forward(state: dict, video: torch.Tensor, heads: int, pool: dict[int, int]) -> torch.Tensor:
    """The authors' C-VidTr forward written out plainly, one clip, head, column and frame at a time.

    pool: layer -> frames kept there. Layers up to the last pooling one are separable (the
    class token skips their attention), later ones attend jointly over every token.
    """
    import torch.nn.functional as F

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps=1e-5)

    def softmax_rows(scores):
        e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=-1, keepdim=True)

    def row_std(a):  # unbiased, as torch.std
        return (((a - a.mean(dim=-1, keepdim=True)) ** 2).sum(dim=-1) / (a.shape[-1] - 1)).sqrt()

    stem = state["conv_stem.weight"]
    grid = F.conv3d(video, stem, state["conv_stem.bias"], stride=stem.shape[2:])  # (B, C, T, h, w)
    c = grid.shape[1]
    d = c // heads
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    logits = []
    for b in range(len(video)):
        frames, patches = grid.shape[2], grid.shape[3] * grid.shape[4]
        seq = torch.cat([state["cls"][0], grid[b].flatten(1).T])  # (1 + T S, C), frame-major
        for i in range(depth):
            layer = f"encoder.layers.{i}."
            h = norm(seq, layer + "norm1")
            if i == 0:
                h = h + state["pos_embedding"][0]
            qkv = h @ state[layer + "self_attn.in_proj_weight"].T + state[layer + "self_attn.in_proj_bias"]
            if i <= max(pool):
                q, k, v = (qkv[1:, j * c:(j + 1) * c].reshape(frames, patches, c) for j in range(3))
                kept = pool.get(i, frames)
                merged = torch.empty(kept, patches, c)
                residual = torch.empty(kept, patches, c)
                old = seq[1:].reshape(frames, patches, c)
                for head in range(heads):
                    sl = slice(head * d, (head + 1) * d)
                    temporal, qs, ks = (torch.empty(kept, patches, d) for _ in range(3))
                    for s in range(patches):
                        a = softmax_rows(q[:, s, sl] @ k[:, s, sl].T / d ** 0.5)
                        rows = sorted(row_std(a).argsort(descending=True)[:kept].tolist()) if i in pool \
                            else list(range(frames))
                        weights = softmax_rows(a[rows]) if i in pool else a
                        temporal[:, s] = weights @ v[:, s, sl]
                        qs[:, s], ks[:, s], residual[:, s, sl] = q[rows, s, sl], k[rows, s, sl], old[rows, s, sl]
                    for t in range(kept):
                        merged[t, :, sl] = softmax_rows(qs[t] @ ks[t].T / d ** 0.5) @ temporal[t]
                out = merged.reshape(-1, c) @ state[layer + "self_attn.out_proj.weight"].T
                out = out + state[layer + "self_attn.out_proj.bias"]
                seq = torch.cat([seq[:1] + h[:1], residual.reshape(-1, c) + out])
                frames = kept
            else:
                q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
                merged = torch.cat([softmax_rows(q[:, sl] @ k[:, sl].T / d ** 0.5) @ v[:, sl]
                                    for sl in (slice(j * d, (j + 1) * d) for j in range(heads))], dim=1)
                seq = (seq + merged @ state[layer + "self_attn.out_proj.weight"].T
                       + state[layer + "self_attn.out_proj.bias"])
            hidden = torch.relu(norm(seq, layer + "norm2") @ state[layer + "linear1.weight"].T
                                + state[layer + "linear1.bias"])
            seq = seq + hidden @ state[layer + "linear2.weight"].T + state[layer + "linear2.bias"]
        logits.append(norm(seq, "encoder.norm")[0] @ state["fc.weight"].T + state["fc.bias"])
    return torch.stack(logits)


@pytest.mark.parametrize("frames, depth, arch, pool", [
    (8, 7, {}, {1: 6, 3: 4, 5: 2}),  # C-VidTr-S's schedule, one joint layer after it
    (16, 6, {}, {1: 8, 2: 4, 4: 2}),  # C-VidTr-M's
    (4, 3, {"pool_layers": [0, 1], "pool_tau": [3, 1]}, {0: 3, 1: 1}),  # another, given with --arch
])
def test_compact_vidtr_authors_checkpoint_converts_to_identical_logits(frames, depth, arch, pool, tmp_path):
    c, heads, patch, size = 32, 4, 16, 32
    state = compact_authors_state(c, depth, frames, patches=(size // patch) ** 2, patch=patch, classes=5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "cvidtr.pth")
    report = convert_checkpoint(tmp_path / "cvidtr.pth", "vidtr-compact", tmp_path / "out",
                                arch={"num_heads": heads, "img_size": size} | arch)
    assert report.layout == "vidtr-compact" and not report.missing and not report.unexpected
    loaded = load_model(str(tmp_path / "out"))
    assert {k: loaded.card.arch[k] for k in ("num_frames", "img_size", "depth", "pool_layers", "pool_tau")} == {
        "num_frames": frames, "img_size": size, "depth": depth,
        "pool_layers": list(pool), "pool_tau": list(pool.values()),
    }
    torch.manual_seed(0)
    video = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
        expected = compact_authors_forward(state, video, heads, pool)
        gap = (loaded.module.eval()(video) - expected).abs().max().item()
    assert gap <= 1e-4, gap


def test_compact_vidtr_checkpoint_needs_its_schedule_and_family(tmp_path):
    state = compact_authors_state(32, depth=3, frames=4, patches=4, patch=16, classes=5)
    torch.save(state, tmp_path / "cvidtr.pth")
    assert detect_layout(read_checkpoint(tmp_path / "cvidtr.pth")) == "vidtr-compact"
    with pytest.raises(UsageError, match="--family vidtr-compact"):
        convert_checkpoint(tmp_path / "cvidtr.pth", "vidtr", tmp_path / "out")
    with pytest.raises(VidclsError, match="pool_layers"):  # 4 frames: neither C-VidTr-S nor -M
        convert_checkpoint(tmp_path / "cvidtr.pth", "vidtr-compact", tmp_path / "out", arch={"img_size": 32})
    with pytest.raises(VidclsError, match="img_size"):  # 16 positions are no whole number of 224 px frames
        convert_checkpoint(tmp_path / "cvidtr.pth", "vidtr-compact", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_family_is_a_usage_error_before_reading_the_file(tmp_path):
    with pytest.raises(UsageError, match="unknown model family 'xvitt'; known: .*xvit"):
        convert_checkpoint(tmp_path / "missing.pth", "xvitt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
