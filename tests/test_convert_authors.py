"""The papers' own checkpoint layouts: X-ViT's and VidTr's convert exactly.

No released file is used: each test writes a checkpoint with the authors' key names (taken
from their public code) out of one of our models, converts it back and compares.
"""

import pytest
import torch

from vidcls.convert import convert_checkpoint, detect_layout, read_checkpoint
from vidcls.errors import UsageError
from vidcls.models import build_model
from vidcls.zoo import load_model

XVIT = {"num_classes": 6, "num_frames": 4, "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2,
        "num_heads": 4, "shift_div": 4, "head_hidden": 48, "head_dropout": 0.0}


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


@pytest.fixture
def xvit_model():
    torch.manual_seed(0)
    model = build_model("xvit", XVIT).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
        model.head.block.attn.qkv.bias.zero_()  # what a qkv without bias computes
    return model


def test_xvit_authors_checkpoint_converts_to_identical_logits(xvit_model, tmp_path):
    checkpoint = {"epoch": 30, "model_state": to_xvit_authors_layout(xvit_model.state_dict()), "cfg": "..."}
    torch.save(checkpoint, tmp_path / "xvit_b16_16_k600.pth")
    report = convert_checkpoint(tmp_path / "xvit_b16_16_k600.pth", "xvit", tmp_path / "out",
                                arch={"num_heads": 4, "shift_div": 4})
    assert report.layout == "xvit" and not report.missing and not report.unexpected
    loaded = load_model(str(tmp_path / "out"))
    assert {k: loaded.card.arch[k] for k in ("num_frames", "img_size", "head_hidden", "num_classes")} == \
        {"num_frames": 4, "img_size": 32, "head_hidden": 48, "num_classes": 6}
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(video), xvit_model(video), atol=1e-5)


def test_ddp_prefix_and_wrappers_are_unwrapped(xvit_model, tmp_path):
    state = {f"module.{k}": v for k, v in to_xvit_authors_layout(xvit_model.state_dict()).items()}
    torch.save({"state_dict": state}, tmp_path / "ddp.pt")
    assert detect_layout(read_checkpoint(tmp_path / "ddp.pt")) == "xvit"


def vidtr_authors_state(c: int, depth: int, frames: int, patches: int, patch: int, classes: int) -> dict:
    """A random state dict with the key names and shapes of the authors' VidTr (vidtr_split.py)."""
    g = torch.Generator().manual_seed(1)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {"conv_stem.weight": rand(c, 3, 1, patch, patch, scale=0.05), "conv_stem.bias": rand(c),
             "cls_s": rand(frames, 1, c), "cls_t": rand(1, patches + 1, c),
             "pos_embedding": rand(1, (frames + 1) * (patches + 1), c),
             "encoder.norm.weight": 1 + rand(c), "encoder.norm.bias": rand(c),
             "fc.weight": rand(classes, c), "fc.bias": rand(classes)}
    for i in range(depth):
        layer = f"encoder.layers.{i}."
        state |= {layer + "self_attn.in_proj_weight": rand(3 * c, c), layer + "self_attn.in_proj_bias": rand(3 * c),
                  layer + "self_attn.out_proj.weight": rand(c, c), layer + "self_attn.out_proj.bias": rand(c),
                  layer + "linear1.weight": rand(2 * c, c), layer + "linear1.bias": rand(2 * c),
                  layer + "linear2.weight": rand(c, 2 * c), layer + "linear2.bias": rand(c),
                  layer + "norm1.weight": 1 + rand(c), layer + "norm1.bias": rand(c),
                  layer + "norm2.weight": 1 + rand(c), layer + "norm2.bias": rand(c)}
    return state


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
            hidden = torch.relu(norm(x, layer + "norm2") @ state[layer + "linear1.weight"].T + state[layer + "linear1.bias"])
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
