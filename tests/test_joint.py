"""The joint space-time ViT: the registry, attention against a plain softmax reference, position tables.

The interface, training, bf16 and interpolation checks shared by every family are in
test_model_interface.py.
"""

import math
import subprocess
import sys

import pytest
import torch

from vidcls.models import build_model, families
from vidcls.models.layers import Attention, sinusoid_table

TINY = {"num_classes": 4, "num_frames": 4, "img_size": 16, "patch_size": 8, "tubelet_size": 2,
        "embed_dim": 32, "depth": 2, "num_heads": 4}


def test_registry_knows_joint():
    assert "joint" in families()
    with pytest.raises(Exception, match="no option"):
        build_model("joint", {"bogus": 1})


def test_registry_discovers_all_families_after_a_direct_import():
    """Importing one family module first must not hide the others (fresh interpreter)."""
    code = ("import vidcls.models.xvit\nfrom vidcls.models import families\n"
            "print(','.join(sorted(families())))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(found.stdout.strip().split(",")) >= {"joint", "xvit", "divided", "vidtr", "ff-linear"}


def test_attention_matches_plain_softmax_formula():
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4).eval()
    x = torch.randn(2, 3, 10, 32)  # two leading batch axes: attention is over the token axis only
    q, k, v = (t.reshape(2, 3, 10, 4, 8).transpose(-2, -3) for t in attn.qkv(x).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(-2, -3).reshape(2, 3, 10, 32))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_every_token_sees_every_other_frame():
    torch.manual_seed(0)
    model = build_model("joint", {**TINY, "pool": "mean", "cls_token": False}).eval()
    video = torch.randn(1, 3, 4, 16, 16)
    changed = video.clone()
    changed[:, :, 3] += 1.0
    with torch.no_grad():
        a = model.patch_embed(video).flatten(1, 2)
        tokens_a = model.blocks[0](a + model.position_embedding((2, 2, 2)))
        b = model.patch_embed(changed).flatten(1, 2)
        tokens_b = model.blocks[0](b + model.position_embedding((2, 2, 2)))
    # tokens of the first tubelet (frames 0-1) change because they attend to frames 2-3
    assert not torch.allclose(tokens_a[:, :4], tokens_b[:, :4])


def test_sinusoid_table_formula():
    table = sinusoid_table(5, 6)
    pos, i = 3, 4
    assert table[pos, i].item() == pytest.approx(math.sin(pos / 10000 ** (i / 6)), abs=1e-6)
    assert table[pos, i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (i / 6)), abs=1e-6)
