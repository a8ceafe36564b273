"""The papers' own checkpoint layouts: X-ViT converts exactly; VidTr's is recognised and refused.

No released file is used: each test writes a checkpoint with the authors' key names (taken
from their public code) out of one of our models, converts it back and compares.
"""

import pytest
import torch

from vidcls.convert import convert_checkpoint, detect_layout, read_checkpoint
from vidcls.errors import VidclsError
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


def test_vidtr_authors_checkpoint_is_recognised_and_refused(tmp_path):
    c, s, t = 64, 16, 4  # width, patches per frame, frames
    state = {"conv_stem.weight": torch.zeros(c, 3, 1, 8, 8), "conv_stem.bias": torch.zeros(c),
             "cls_s": torch.zeros(t, 1, c), "cls_t": torch.zeros(1, s + 1, c),
             "pos_embedding": torch.zeros(1, (t + 1) * (s + 1), c),
             "encoder.layers.0.self_attn.in_proj_weight": torch.zeros(3 * c, c),
             "encoder.layers.0.self_attn.out_proj.weight": torch.zeros(c, c),
             "encoder.layers.0.linear1.weight": torch.zeros(4 * c, c), "fc.weight": torch.zeros(400, c)}
    torch.save(state, tmp_path / "vidtr_s_8x8.pth")
    with pytest.raises(VidclsError, match="authors' layout.*cannot be converted exactly"):
        convert_checkpoint(tmp_path / "vidtr_s_8x8.pth", "vidtr", tmp_path / "out")
    assert not (tmp_path / "out").exists()
