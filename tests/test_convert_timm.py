"""ImageNet initialisation from a timm-layout ViT: at the start, a video model is the image model per frame.

The image model is a tiny random state dict with timm's key names, and its reference
forward pass is written out below by hand (patches, class token, positions, pre-LN
blocks with head-by-head softmax attention, final LayerNorm).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from hub_helpers import timm_vit_state
from vidcls.errors import UsageError, VidclsError
from vidcls.models import build_model
from vidcls.zoo.convert.timm import inflate_patch, init_from_image_state

WIDTH, DEPTH, HEADS, PATCH, SIZE = 32, 2, 4, 8, 32
EPS = 1e-6
SMALL = {"img_size": SIZE, "patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS,
         "num_classes": 5}


def image_vit_features(s: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """The plain image ViT: (3, H, W) -> final-normed class token (C,)."""
    def norm(x, name):
        return F.layer_norm(x, (WIDTH,), s[f"{name}.weight"], s[f"{name}.bias"], EPS)

    def linear(x, name):
        return x @ s[f"{name}.weight"].T + s[f"{name}.bias"]

    patches = F.conv2d(image[None], s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([s["cls_token"][0], patches.flatten(2)[0].T]) + s["pos_embed"][0]
    d = WIDTH // HEADS
    for i in range(DEPTH):
        q, k, v = linear(norm(x, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv").split(WIDTH, dim=-1)
        heads = [torch.softmax(q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / math.sqrt(d), dim=-1)
                 @ v[:, h * d:(h + 1) * d] for h in range(HEADS)]
        x = x + linear(torch.cat(heads, dim=-1), f"blocks.{i}.attn.proj")
        hidden = F.gelu(linear(norm(x, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1"))
        x = x + linear(hidden, f"blocks.{i}.mlp.fc2")
    return norm(x, "norm")[0]


@pytest.fixture
def image_state():
    return timm_vit_state()


@pytest.fixture
def video():
    torch.manual_seed(1)
    return torch.randn(1, 3, 4, SIZE, SIZE)  # every frame different


def test_xvit_without_mixing_is_the_image_model_on_every_frame(image_state, video):
    model = build_model("xvit", SMALL | {"num_frames": 4, "shift_div": 0}).eval()
    report = init_from_image_state(model, image_state)
    assert all(k.startswith("head.") for k in report.kept)  # only the temporal head keeps its init
    with torch.no_grad():
        frames = model.forward_features(video)[0, :, 0]  # each frame's class token
    for t in range(4):
        assert torch.allclose(frames[t], image_vit_features(image_state, video[0, :, t]), atol=1e-4)


def test_divided_starts_as_the_image_model(image_state, video):
    """temporal_fc = 0 in every block: on a static clip the clip token is exactly the image's class token."""
    model = build_model("divided", SMALL | {"num_frames": 4}).eval()
    report = init_from_image_state(model, image_state)
    assert report.kept == ["head.bias", "head.weight"]
    block = model.blocks[0]
    assert torch.equal(block.temporal_attn.qkv.weight, block.attn.qkv.weight)
    assert torch.equal(block.temporal_norm.weight, block.norm1.weight)
    assert all(not b.temporal_fc.weight.any() for b in model.blocks)
    static = video[:, :, :1].expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(static)[0, 0], image_vit_features(image_state, video[0, :, 0]),
                              atol=1e-4)


@pytest.mark.parametrize("inflate, frame", [("central", 1), ("average", None)])
def test_joint_tubelet_inflation(image_state, video, inflate, frame):
    """Tubelet 2 over 2 frames: central inflation sees frame 1 only; average sees their mean."""
    model = build_model("joint", SMALL | {"num_frames": 2, "tubelet_size": 2}).eval()
    init_from_image_state(model, image_state, inflate=inflate)
    clip = video[:, :, :2]
    image = clip[0, :, frame] if frame is not None else clip[0].mean(dim=1)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(clip)[0, 0], image_vit_features(image_state, image), atol=1e-4)


def test_joint_position_table_is_tiled_over_time(image_state):
    model = build_model("joint", SMALL | {"num_frames": 8, "tubelet_size": 2})
    init_from_image_state(model, image_state)
    table = model.pos_embed[0]
    assert torch.equal(table[0], image_state["pos_embed"][0, 0])
    assert all(torch.equal(table[1 + t * 16:1 + (t + 1) * 16], image_state["pos_embed"][0, 1:]) for t in range(4))


def test_vidtr_compact_takes_every_block_and_a_position_table_tiled_over_time(image_state):
    model = build_model("vidtr-compact", SMALL | {"num_frames": 4, "pool_layers": [0], "pool_tau": [2]})
    report = init_from_image_state(model, image_state)
    assert report.kept == ["head.bias", "head.weight"]
    assert torch.equal(model.blocks[1].attn.qkv.weight, image_state["blocks.1.attn.qkv.weight"])  # a joint block
    table = model.pos_embed[0]
    assert torch.equal(table[0], image_state["pos_embed"][0, 0])
    assert all(torch.equal(table[1 + t * 16:1 + (t + 1) * 16], image_state["pos_embed"][0, 1:]) for t in range(4))


def test_position_table_is_resized_to_another_frame_size():
    model = build_model("xvit", SMALL | {"img_size": 48, "num_frames": 4})
    with pytest.warns(UserWarning, match="interpolating"):
        init_from_image_state(model, timm_vit_state(side=4))
    assert model.pos_embed.shape == (1, 1 + 36, WIDTH)


def test_vidtr_copies_spatial_attention_into_temporal(image_state):
    model = build_model("vidtr", SMALL | {"num_frames": 4, "mlp_activation": "gelu"})
    report = init_from_image_state(model, image_state)
    assert report.kept == ["head.bias", "head.weight"]
    assert torch.equal(model.blocks[1].temporal_attn.proj.weight, image_state["blocks.1.attn.proj.weight"])
    assert not model.time_embed.any()


def test_inflations_preserve_a_static_clip():
    weight = torch.randn(8, 3, 4, 4)
    for how in ("central", "average"):
        assert torch.allclose(inflate_patch(weight, 3, how).sum(dim=2), weight, atol=1e-6)


def test_mismatched_or_unsupported_models_are_refused(image_state):
    with pytest.raises(VidclsError, match="does not fit"):
        init_from_image_state(build_model("joint", SMALL | {"embed_dim": 64}), image_state)
    with pytest.raises(VidclsError, match="does not fit"):
        init_from_image_state(build_model("joint", SMALL | {"depth": 3}), image_state)
    with pytest.raises(UsageError, match="no ImageNet initialisation"):
        init_from_image_state(build_model("ff-linear", {"num_classes": 4, "num_frames": 4, "img_size": 32,
                                                        "embed_dim": 32, "depth": 1, "num_heads": 4}), image_state)
