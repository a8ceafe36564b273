"""The interface every model family shares (vidcls.models.base.VideoClassifier), on every tiny model.

One parametrised test per property instead of a copy per family: every `-tiny` zoo entry,
the vidtr-compact family built tiny here, and the other branch of each family's head or
blocks. What is particular to a family (its attention against loops written out by
hand, the authors' layouts) stays in that family's test file.
"""

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F

from vidcls.errors import UsageError
from vidcls.models import build_model, families, register
from vidcls.models.base import VideoClassifier, VideoConfig
from vidcls.zoo.catalog import zoo_entries

ZOO_TINY = {name: (entry["family"], entry["arch"]) for name, entry in zoo_entries().items() if name.endswith("-tiny")}
CASES = {
    **ZOO_TINY,
    "vidtr-compact-tiny": ("vidtr-compact", {"num_classes": 4, "num_frames": 8, "img_size": 32, "patch_size": 8,
                                             "embed_dim": 64, "depth": 4, "num_heads": 4, "head_dropout": 0.0,
                                             "pool_layers": [1, 2], "pool_tau": [4, 2]}),
    # the other branch of a family's pooling, head, embedding or blocks
    "joint-tiny/mean-pool": ("joint", {**ZOO_TINY["joint-tiny"][1], "pool": "mean", "cls_token": False,
                                       "pos_embed": "sinusoidal", "qkv_bias": "qv"}),
    "xvit-tiny/mean-head": ("xvit", {**ZOO_TINY["xvit-tiny"][1], "head": "mean", "summary_tokens": True}),
    "vidtr-tiny/authors": ("vidtr", {**ZOO_TINY["vidtr-tiny"][1], "attention": "shared",
                                     "embedding": "attention_input", "pos_every_layer": True}),
    # X-CLIP: a classifier built from text (its label set's encoded prompts, random before set_labels)
    "xclip-tiny": ("xclip", {"num_classes": 4, "num_frames": 8, "img_size": 32, "patch_size": 8, "embed_dim": 64,
                             "depth": 2, "num_heads": 4, "projection_dim": 32, "mit_heads": 4, "text_dim": 32,
                             "text_depth": 1, "text_heads": 4, "vocab_size": 64, "context_length": 8,
                             "prompt_heads": 4}),
}
# Families whose classifier is built from text (set_labels, not reset_classifier): the text encoder runs
# once per label set, outside the forward pass, so its weights get no gradient from a video's loss, and
# the classifier also reads the clip's patch features (video-specific prompts), not the pre-logits alone.
TEXT_FAMILIES = {"xclip"}


def learned(model: VideoClassifier) -> dict[str, torch.nn.Parameter]:
    """The parameters a video's loss reaches (all but a text encoder's)."""
    text = model.family in TEXT_FAMILIES
    return {name: p for name, p in model.named_parameters() if not (text and name.startswith("text."))}
CLIPS = 4  # one clip of each of the 4 classes


def build(case: str, **options) -> VideoClassifier:
    family, arch = CASES[case]
    return build_model(family, {**arch, **options})


def clip(model: VideoClassifier, batch: int = 2) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.in_chans, c.num_frames, c.img_size, c.img_size)


def test_every_family_is_a_video_classifier_with_a_shared_config_and_is_tested_here():
    assert {family for family, _ in CASES.values()} == set(families())
    for cls in families().values():
        assert issubclass(cls, VideoClassifier) and issubclass(cls.Config, VideoConfig)
    with pytest.raises(TypeError, match="VideoClassifier"):
        register("plain")(type("Plain", (torch.nn.Module,), {"Config": VideoConfig}))


@pytest.mark.parametrize("case", CASES)
def test_forward_is_forward_head_of_forward_features(case):
    torch.manual_seed(0)
    model = build(case).eval()
    video = clip(model)
    with torch.no_grad():
        features = model.forward_features(video)
        logits = model(video)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert features.ndim >= 3 and features.shape[0] == 2 and features.shape[-1] == model.num_features
        assert torch.equal(model.forward_head(features), logits)
        assert pre_logits.shape == (2, model.get_classifier().in_features)
        visual = (features[:, 1:],) if model.family in TEXT_FAMILIES else ()
        assert torch.equal(model.get_classifier()(pre_logits, *visual), logits)
    assert logits.shape == (2, model.num_classes) == (2, model.config.num_classes)


@pytest.mark.parametrize("case", CASES)
def test_reset_classifier_replaces_only_the_classifier(case):
    torch.manual_seed(0)
    model = build(case).eval()
    if model.family in TEXT_FAMILIES:
        with pytest.raises(UsageError, match="set_labels"):
            model.reset_classifier(7)
        return
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.reset_classifier(7)
    assert model(clip(model)).shape == (2, 7) and model.num_classes == model.config.num_classes == 7
    after = model.state_dict()
    classifier = {f"{model.classifier_name}.{key}" for key in model.get_classifier().state_dict()}
    assert classifier == {f"{model.classifier_name}.weight", f"{model.classifier_name}.bias"}
    assert {key for key in after if key in classifier or not torch.equal(after[key], before[key])} == classifier
    assert all(after[key].shape[0] == 7 for key in classifier)
    # the config describes the new model, and the new classifier starts as a new model's does
    fresh = build_model(model.family, dataclasses.asdict(model.config))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in after.items()}
    new, built = model.get_classifier(), fresh.get_classifier()
    assert new.bias.any() == built.bias.any()  # zero (ViT init) or fan-in uniform alike
    assert 0.5 < new.weight.std() / built.weight.std() < 2


@pytest.mark.parametrize("case", CASES)
def test_head_dropout_acts_in_forward_head_only(case):
    torch.manual_seed(0)
    model = build(case, head_dropout=0.5).train()
    video = clip(model)
    features = model.forward_features(video)
    assert torch.equal(model.forward_features(video), features)  # no dropout left in the backbone
    assert not torch.equal(model.forward_head(features), model.forward_head(features))


def block_calls(model: VideoClassifier) -> list[int]:
    """A live list: how many times each of model.blocks has started (a recomputation may stop
    early, once it has rebuilt what the backward pass needs, so a forward hook could miss it)."""
    calls = [0] * len(model.blocks)
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("case", CASES)
def test_grad_checkpointing_recomputes_every_block_and_keeps_the_gradients(case):
    """Dropout and drop-path are on: the recomputation must draw the masks of the first pass."""
    torch.manual_seed(0)
    model = build(case, dropout=0.1, drop_path=0.1).train()
    video = clip(model)
    calls = block_calls(model)
    gradients = []
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        torch.manual_seed(1)
        model(video).logsumexp(dim=1).sum().backward()
        gradients.append({name: p.grad.clone() for name, p in learned(model).items()})
    assert calls == [1 + 2] * len(model.blocks)  # once without, twice (forward, backward) with checkpointing
    for name, grad in gradients[0].items():
        assert torch.allclose(gradients[1][name], grad, atol=1e-6), name
    with torch.no_grad():  # nothing to recompute: blocks run once
        model(video)
    assert calls == [4] * len(model.blocks)


def overfit(model: VideoClassifier, steps: int) -> float:
    """Train on CLIPS random clips, one per class, until eval-mode accuracy is 100%; that accuracy.

    The last step's gradients stay on the parameters for the caller to inspect.
    """
    video, labels = clip(model, CLIPS), torch.arange(CLIPS) % model.num_classes
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    accuracy = 0.0
    for _ in range(steps):
        logits = model.train()(video)
        optimiser.zero_grad()
        F.cross_entropy(logits, labels).backward()
        optimiser.step()
        if (logits.argmax(dim=1) == labels).all():  # confirm in eval mode only when training fits
            with torch.no_grad():
                accuracy = (model.eval()(video).argmax(dim=1) == labels).float().mean().item()
            if accuracy == 1.0:
                break
    return accuracy


@pytest.mark.parametrize("case", CASES)
def test_tiny_model_overfits_and_every_parameter_learns(case):
    torch.manual_seed(0)
    model = build(case)
    assert overfit(model, steps=60) == 1.0
    idle = [name for name, p in learned(model).items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert idle == []


@pytest.mark.parametrize("case", CASES)
def test_bf16_autocast_forward_and_backward(case):
    """Under CPU bf16 autocast: bf16 logits within 0.1 of fp32, finite gradients for every parameter."""
    torch.manual_seed(0)
    model = build(case).train()
    video = clip(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(video)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learned(model).values())
    with torch.no_grad():
        reference = model.eval()(video)
    assert torch.allclose(logits.float(), reference, atol=0.1)


@pytest.mark.parametrize(("case", "frames", "height", "width"), [
    ("joint-tiny", 12, 48, 48),
    ("divided-tiny", 6, 32, 32),
    ("divided-tiny", 8, 48, 40),
    ("xvit-tiny", 16, 32, 32),
    ("vidtr-tiny", 6, 40, 40),
    ("c-vidtr-tiny", 12, 32, 32),  # pools to 4, then 2 frames
    ("c-vidtr-tiny", 3, 32, 32),  # the first pooling layer has nothing to drop
    ("ff-linear-tiny", 5, 32, 32),
    ("xclip-tiny", 6, 40, 40),
])
def test_other_frame_counts_and_sizes_interpolate_with_warning(case, frames, height, width):
    model = build(case).eval()
    with pytest.warns(UserWarning, match="interpolating"), torch.no_grad():
        assert model(torch.randn(1, 3, frames, height, width)).shape == (1, model.num_classes)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")
        model(clip(model, batch=1))
