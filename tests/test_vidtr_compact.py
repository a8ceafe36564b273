"""The VidTr authors' compact model (vidtr-compact); its logits against their forward written
out as loops are checked in test_convert_authors.py, the interface, training and bf16 checks
shared by every family in test_model_interface.py."""

import pytest
import torch

from vidcls.models import build_model
from vidcls.models.vidtr_compact import PoolingSeparableBlock

ARCH = dict(num_classes=4, num_frames=8, img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=4,
            head_dropout=0.0, pool_layers=[1, 2], pool_tau=[4, 2])


def test_blocks_pool_and_then_attend_jointly():
    model = build_model("vidtr-compact", ARCH).eval()
    kinds = [(type(b).__name__, getattr(b, "keep", "-")) for b in model.blocks]
    assert kinds == [("PoolingSeparableBlock", None), ("PoolingSeparableBlock", 4),
                     ("PoolingSeparableBlock", 2), ("Block", "-")]
    tokens = torch.randn(2, 1 + 8 * 16, 32)
    with torch.no_grad():
        assert model.blocks[1](tokens, 16).shape == (2, 1 + 4 * 16, 32)  # 8 frames -> the 4 kept


def test_pooled_residual_keeps_each_heads_frames():
    """With its attention output and MLP zeroed, a pooling block returns the class token plus
    LN(class token) and, per patch and head, `keep` of that head's own frames in temporal order."""
    torch.manual_seed(0)
    block = PoolingSeparableBlock(dim=16, num_heads=2, mlp_ratio=2.0, act="relu", eps=1e-5, keep=2).eval()
    with torch.no_grad():
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
        x = torch.randn(1, 1 + 4 * 3, 16)  # 4 frames of 3 patches
        out = block(x, 3)
        assert torch.allclose(out[:, 0], x[:, 0] + block.norm1(x[:, 0]))
    before, after = x[0, 1:].reshape(4, 3, 2, 8), out[0, 1:].reshape(2, 3, 2, 8)  # (frame, patch, head, d)
    chosen = {}
    for patch in range(3):
        for head in range(2):
            source = [next(t for t in range(4) if torch.equal(before[t, patch, head], row))
                      for row in after[:, patch, head]]
            assert source == sorted(set(source))  # distinct frames, in temporal order
            chosen[patch, head] = source
    assert any(chosen[p, 0] != chosen[p, 1] for p in range(3))  # the heads do choose for themselves


def test_config_is_checked():
    with pytest.raises(ValueError, match="pair up"):
        build_model("vidtr-compact", {**ARCH, "pool_layers": [], "pool_tau": []})
    with pytest.raises(ValueError, match="increasing"):
        build_model("vidtr-compact", {**ARCH, "pool_layers": [2, 1]})
    with pytest.raises(ValueError, match="fewer frames"):
        build_model("vidtr-compact", {**ARCH, "pool_tau": [4, 4]})
    with pytest.raises(ValueError, match="fewer frames"):
        build_model("vidtr-compact", {**ARCH, "pool_tau": [8, 2]})
    model = build_model("vidtr-compact", ARCH)
    with pytest.raises(ValueError, match="8 frames of 32 px only"):
        model(torch.randn(1, 3, 4, 32, 32))
