"""transformers TimeSformer / VideoMAE / ViViT -> vidcls: logits parity with the reference models.

The reference is the `transformers` implementation itself (test dependency only), built small
and random; vidcls reads what save_pretrained wrote, through its own key mapping.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hub_helpers import save_transformers, tiny_transformers_model
from vidcls.errors import UsageError, VidclsError
from vidcls.zoo.convert import convert_checkpoint
from vidcls.zoo.convert.transformers import arch_from_config, input_from_preprocessor, rename
from vidcls.zoo.resolve import load_model

pytest.importorskip("transformers")

KINDS = ["timesformer", "videomae", "vivit"]
FAMILY = {"timesformer": "divided", "videomae": "joint", "vivit": "joint"}


def logits_gap(reference, loaded, video: torch.Tensor) -> float:
    """Max |logit difference| on one input; transformers takes (B, T, C, H, W), we (B, C, T, H, W)."""
    with torch.no_grad():
        expected = reference(pixel_values=video).logits
        got = loaded.module(video.transpose(1, 2))
    return (expected - got).abs().max().item()


@pytest.mark.parametrize("kind", KINDS)
def test_saved_directory_loads_with_identical_logits(kind, tmp_path):
    reference = tiny_transformers_model(kind)
    loaded = load_model(str(save_transformers(reference, tmp_path / kind)))
    assert loaded.card.family == FAMILY[kind]
    assert loaded.labels == ["a", "b", "c", "d", "e"]
    video = torch.randn(2, 8, 3, 32, 32)
    assert logits_gap(reference, loaded, video) <= 1e-4


def _rewrite_keys(directory, rules):
    path = directory / "model.safetensors"
    state = load_file(str(path))
    for old, new in rules:
        state = {k.replace(old, new): v for k, v in state.items()}
    save_file(state, str(path))


def test_videomae_query_value_bias_naming_is_accepted(tmp_path):
    """Older checkpoints store q_bias / v_bias; transformers 5 names them query.bias / value.bias."""
    reference = tiny_transformers_model("videomae")
    directory = save_transformers(reference, tmp_path / "mae")
    assert any(k.endswith(".q_bias") for k in load_file(str(directory / "model.safetensors")))
    _rewrite_keys(directory, [("attention.q_bias", "attention.query.bias"),
                              ("attention.v_bias", "attention.value.bias")])
    assert logits_gap(reference, load_model(str(directory)), torch.randn(1, 8, 3, 32, 32)) <= 1e-4


def test_vivit_new_module_naming_is_accepted(tmp_path):
    """transformers 5 keeps ViViT as vivit.layers.N.attention.q_proj / mlp.fc1 in memory."""
    reference = tiny_transformers_model("vivit")
    directory = save_transformers(reference, tmp_path / "vivit")
    path = directory / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert any(".q_proj." in k for k in load_file(str(path)))
    assert logits_gap(reference, load_model(str(directory)), torch.randn(1, 8, 3, 32, 32)) <= 1e-4


def test_videomae_layer_norm_eps_differ_per_norm():
    """Blocks take config.layer_norm_eps (1e-12); fc_norm is built with torch's default 1e-5."""
    reference = tiny_transformers_model("videomae")
    _, arch = arch_from_config(reference.config.to_dict())
    assert arch["layer_norm_eps"] == reference.videomae.encoder.layer[0].layernorm_before.eps == 1e-12
    assert arch["fc_norm_eps"] == reference.fc_norm.eps == 1e-5
    assert arch["qkv_bias"] == "qv" and arch["pos_embed"] == "sinusoidal" and arch["pool"] == "mean"


def test_other_frame_counts_and_sizes_run_where_the_reference_cannot(tmp_path):
    """TimeSformer and VideoMAE in transformers hard-code frames / size; ours interpolate."""
    for kind in ("timesformer", "videomae"):
        loaded = load_model(str(save_transformers(tiny_transformers_model(kind), tmp_path / kind)))
        with pytest.warns(UserWarning, match="interpolating"), torch.no_grad():
            assert loaded.module(torch.randn(1, 3, 16, 48, 48)).shape == (1, 5)


def test_unused_keys_are_reported_not_silently_dropped(tmp_path):
    directory = save_transformers(tiny_transformers_model("vivit"), tmp_path / "vivit")
    state = load_file(str(directory / "model.safetensors"))
    state["vivit.pooler.dense.weight"] = torch.zeros(64, 64)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(VidclsError, match="unexpected: vivit.pooler.dense.weight"):
        load_model(str(directory))


def test_every_reference_parameter_has_a_rule():
    for kind in KINDS:
        reference = tiny_transformers_model(kind)
        assert all(rename(key) is not None for key in reference.state_dict()), kind


@pytest.mark.parametrize("config, message", [
    ({"model_type": "timesformer", "attention_type": "space_only"}, "attention_type"),
    ({"model_type": "videomae", "use_mean_pooling": False}, "use_mean_pooling"),
    ({"model_type": "vivit", "image_size": [224, 160]}, "non-square"),
    ({"model_type": "bert"}, "not supported"),
])
def test_unsupported_variants_are_refused(config, message):
    base = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": 32, "patch_size": 8, "num_frames": 8, "layer_norm_eps": 1e-6}
    with pytest.raises(VidclsError, match=message):
        arch_from_config(base | config)


def reference_processor(pixels: torch.Tensor, pre: dict) -> torch.Tensor:
    """transformers' image processors, written out: (p * rescale_factor - offset - mean) / std."""
    mean = torch.tensor(pre["image_mean"]).view(3, 1, 1)
    std = torch.tensor(pre["image_std"]).view(3, 1, 1)
    return (pixels * pre["rescale_factor"] - float(pre.get("offset", False)) - mean) / std


@pytest.mark.parametrize("pre", [
    {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 127.5, "offset": True,
     "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}},  # ViViT's
    {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "rescale_factor": 1 / 255,
     "size": 224},  # VideoMAE's (old feature-extractor style: one size, crop to it)
])
def test_preprocessor_config_gives_the_same_normalised_input(pre):
    spec = input_from_preprocessor(pre)
    pixels = torch.randint(0, 256, (3, 4, 4)).float()
    ours = (pixels / 255 - torch.tensor(spec["mean"]).view(3, 1, 1)) / torch.tensor(spec["std"]).view(3, 1, 1)
    assert torch.allclose(ours, reference_processor(pixels, pre), atol=1e-5)
    assert spec["size"] == 224 and spec["resize"] == (256 if "crop_size" in pre else None)


# ---------------------------------------------------------------- vidcls convert of .bin files


def _pickle_repo(kind, directory):
    """A transformers-format directory whose weights exist only as pytorch_model.bin."""
    reference = tiny_transformers_model(kind)
    save_transformers(reference, directory)
    state = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return reference


@pytest.mark.parametrize("kind", KINDS)
def test_convert_pickle_checkpoint_gives_identical_logits(kind, tmp_path):
    reference = _pickle_repo(kind, tmp_path / "src")
    report = convert_checkpoint(tmp_path / "src" / "pytorch_model.bin", FAMILY[kind], tmp_path / "out")
    assert report.layout == "transformers" and not report.missing and not report.unexpected
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["format"] == "vidcls" and config["id2label"]["4"] == "e"
    assert logits_gap(reference, load_model(str(tmp_path / "out")), torch.randn(1, 8, 3, 32, 32)) <= 1e-4


def test_pickle_only_directory_is_not_unpickled_implicitly(tmp_path):
    _pickle_repo("vivit", tmp_path / "src")
    with pytest.raises(VidclsError, match="never unpickled implicitly.*vidcls convert"):
        load_model(str(tmp_path / "src"))


class NotATensor:
    pass


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": NotATensor()}, path)
    with pytest.raises(VidclsError, match="not a loadable weights-only checkpoint") as info:
        convert_checkpoint(path, "joint", tmp_path / "out")
    assert "\n" not in str(info.value)
    # torch's own message advises weights_only=False (running the file's code) in terminal escapes: not passed on
    assert "refused without running them" in str(info.value)
    assert "weights_only" not in str(info.value) and "can still be loaded" not in str(info.value)
    assert "\x1b" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_weights_refused_unless_allowed(tmp_path):
    _pickle_repo("timesformer", tmp_path / "src")
    state = torch.load(tmp_path / "src" / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")},
               tmp_path / "src" / "pytorch_model.bin")
    with pytest.raises(VidclsError, match=r"missing: head.bias, head.weight \(2\)\); nothing written"):
        convert_checkpoint(tmp_path / "src" / "pytorch_model.bin", "divided", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = convert_checkpoint(tmp_path / "src" / "pytorch_model.bin", "divided", tmp_path / "out",
                                allow_missing=True)
    assert report.missing == ["head.bias", "head.weight"]
    assert load_model(str(tmp_path / "out")).card.family == "divided"


def test_wrong_family_for_the_checkpoint_is_a_usage_error(tmp_path):
    _pickle_repo("videomae", tmp_path / "src")
    with pytest.raises(UsageError, match="--family joint"):
        convert_checkpoint(tmp_path / "src", "divided", tmp_path / "out")


def test_convert_command_reports_keys_and_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from vidcls.cli import app

    _pickle_repo("videomae", tmp_path / "src")
    state = torch.load(tmp_path / "src" / "pytorch_model.bin", weights_only=True)
    state["decoder.head.weight"] = torch.zeros(1)  # a pre-training leftover: reported, not fatal
    del state["fc_norm.weight"]
    torch.save(state, tmp_path / "src" / "pytorch_model.bin")
    args = ["convert", str(tmp_path / "src" / "pytorch_model.bin"), "--family", "joint", "--out", str(tmp_path / "out")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "fc_norm.weight" in refused.output and not (tmp_path / "out").exists()
    written = CliRunner().invoke(app, args + ["--allow-missing", "--arch", "num_heads=4"])
    assert written.exit_code == 0, written.output
    output = " ".join(written.output.split())
    assert "missing (initialised): 1: fc_norm.weight" in output
    assert "unexpected (ignored): 1: decoder.head.weight" in output
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_full_size_parity(kind, tmp_path):
    """ViT-B/16 at the published configuration (8 frames to stay quick); scripts/parity_fullsize.py
    runs the published frame counts and the speed comparison."""
    import transformers as tf

    config, model = {"timesformer": (tf.TimesformerConfig, tf.TimesformerForVideoClassification),
                     "videomae": (tf.VideoMAEConfig, tf.VideoMAEForVideoClassification),
                     "vivit": (tf.VivitConfig, tf.VivitForVideoClassification)}[kind]
    torch.manual_seed(0)
    reference = model(config(num_frames=8, num_labels=400)).eval()
    loaded = load_model(str(save_transformers(reference, tmp_path / kind)))
    assert logits_gap(reference, loaded, torch.randn(1, 8, 3, 224, 224)) <= 1e-4
