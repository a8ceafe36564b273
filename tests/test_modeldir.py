"""Model directories: save/load round trip, bad weights and labels, REF resolution errors."""

import json

import pytest
import torch

from vidcls.errors import UsageError, VidclsError
from vidcls.zoo import (InputSpec, ModelCard, load_model, read_card, resolve, save_model_dir, zoo_card,
                        zoo_entries, zoo_summary)

ARCH = {"num_classes": 3, "num_frames": 4, "img_size": 16, "patch_size": 8, "tubelet_size": 2,
        "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture
def model_dir(tmp_path):
    card = ModelCard(name="tiny", family="joint", arch=ARCH, input=InputSpec(frames=4, size=16),
                     labels=["a", "b", "c"])
    from vidcls.models import build_model
    module = build_model("joint", ARCH)
    return save_model_dir(tmp_path / "tiny", card, module), module


def test_round_trip_gives_identical_logits(model_dir):
    directory, module = model_dir
    loaded = load_model(str(directory))
    video = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(video), module.eval()(video))
    assert loaded.labels == ["a", "b", "c"]
    assert loaded.card.input.frames == 4
    assert json.loads((directory / "config.json").read_text())["id2label"]["2"] == "c"


def test_save_is_atomic_and_replaces(model_dir, tmp_path):
    directory, module = model_dir
    card = read_card(directory)
    card.labels = ["x", "y", "z"]
    save_model_dir(directory, card, module)
    assert read_card(directory).labels == ["x", "y", "z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temporaries left behind


def test_wrong_label_count_is_refused(model_dir):
    directory, _ = model_dir
    config = json.loads((directory / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(VidclsError, match="2 labels but a head of 3"):
        load_model(str(directory))


def test_corrupt_weights_are_a_one_line_error(model_dir):
    directory, _ = model_dir
    (directory / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(VidclsError, match="not a readable safetensors") as info:
        load_model(str(directory))
    assert "\n" not in str(info.value)


def test_weights_of_another_architecture_are_refused(model_dir, tmp_path):
    directory, _ = model_dir
    other = ModelCard(name="other", family="joint", arch={**ARCH, "embed_dim": 16}, labels=["a", "b", "c"])
    from vidcls.models import build_model
    save_model_dir(tmp_path / "other", other, build_model("joint", other.arch))
    with pytest.raises(VidclsError, match="wrong shape"):
        load_model(str(directory), weights=tmp_path / "other" / "model.safetensors")


def test_missing_weights_file(model_dir):
    directory, _ = model_dir
    (directory / "model.safetensors").unlink()
    with pytest.raises(VidclsError, match="not found"):
        load_model(str(directory))


def test_unknown_ref_lists_known_models():
    with pytest.raises(UsageError, match="demo-motion") as info:
        resolve("no-such-model")
    assert info.value.exit_code == 2


def test_architecture_without_weights_is_refused_for_prediction():
    with pytest.raises(UsageError, match="without published weights"):
        load_model("joint-tiny", require_weights=True)
    assert load_model("joint-tiny").weights is None


def test_every_zoo_entry_builds_a_consistent_card():
    for name in zoo_entries():
        summary = zoo_summary(name)
        assert summary["attention"] in ("linear", "quadratic")
        card = zoo_card(name)
        assert card.input.frames == summary["frames"]


def test_demo_motion_ships_with_four_direction_labels():
    model = load_model("demo-motion", require_weights=True)
    assert model.labels == ["left", "right", "up", "down"]
    assert model.weights.endswith("model.safetensors")
