"""Model directories: save/load round trip, bad weights and labels, REF resolution errors."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from vidcls.errors import UsageError, VidclsError
from vidcls.models import make_config
from vidcls.zoo.cards import read_card
from vidcls.zoo.catalog import zoo_card, zoo_entries, zoo_summary
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir
from vidcls.zoo.resolve import load_model, resolve

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


def test_a_save_that_fails_half_way_leaves_the_old_directory_whole(model_dir, tmp_path, monkeypatch):
    """Killed (here: an error) after config.json is written and before the weights are: the old
    directory is still the one read, config and weights alike, and nothing half-written is left."""
    from vidcls.zoo import modeldir

    directory, module = model_dir
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    card = read_card(directory)
    card.labels = ["x", "y", "z"]

    def dies_mid_write(path, module):
        raise OSError("disk full")

    monkeypatch.setattr(modeldir, "write_weights", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(directory, card, module)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


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


def test_unknown_name_suggests_the_closest_zoo_names():
    with pytest.raises(UsageError) as info:
        resolve("xvit-tiyn")
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert "did you mean xvit-tiny" in message and "`vidcls models`" in message
    assert "demo-motion" not in message  # the closest names, not the whole zoo
    with pytest.raises(UsageError, match="`vidcls models` lists the zoo") as info:
        resolve("qwertyuiop")
    assert "did you mean" not in str(info.value)


def test_missing_path_is_named_as_a_path(tmp_path):
    for ref in ("./missing-dir", str(tmp_path / "nope"), "runs/x"):
        with pytest.raises(UsageError, match="no such directory") as info:
            resolve(ref)
        assert "unknown model" not in str(info.value)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="is a file"):
        resolve(str(tmp_path / "weights.bin"))


def test_training_run_without_best_model_points_to_last(model_dir):
    model_dir, _ = model_dir
    run = model_dir.parent / "run"
    (run / "last").mkdir(parents=True)
    (run / "last" / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(VidclsError, match=r"latest checkpoint is .*last.*--resume"):
        load_model(str(run))
    (run / "last" / "config.json").unlink()
    with pytest.raises(VidclsError) as info:
        load_model(str(run))
    assert "checkpoint" not in str(info.value)  # no hint where there is no checkpoint


def test_architecture_without_weights_is_refused_unless_random_is_allowed():
    with pytest.raises(UsageError, match="without trained weights") as info:
        load_model("joint-tiny")
    assert "demo-motion" in str(info.value) and "timesformer-k400" in str(info.value)  # models that have weights
    assert "joint-tiny" not in str(info.value).split("weights:")[-1]
    assert load_model("joint-tiny", allow_random=True).weights is None


def test_need_weights_false_reads_no_weight_file(model_dir):
    model_dir, _ = model_dir
    (model_dir / "model.safetensors").unlink()  # only the architecture is asked for
    assert resolve(str(model_dir), need_weights=False).weights is None
    with pytest.raises(VidclsError, match="model.safetensors"):
        load_model(str(model_dir))


ZOO_YAML = Path(__file__).resolve().parents[1] / "models.yaml"


def test_every_zoo_entry_builds_a_consistent_card():
    """Each entry, read back through the zoo, agrees with the raw models.yaml and builds its family."""
    raw = yaml.safe_load(ZOO_YAML.read_text())["models"]
    assert sorted(raw) == sorted(zoo_entries())
    for name, entry in raw.items():
        summary, card = zoo_summary(name), zoo_card(name)
        assert card.family == entry["family"] and summary["attention"] == entry["attention"]
        # the cost class follows the family: only the LVT family attends linearly
        assert entry["attention"] == ("linear" if entry["family"] == "ff-linear" else "quadratic"), name
        config = make_config(card.family, card.arch)  # every arch key is an option of the family
        recipe = entry.get("input", {})
        if "frames" in recipe:
            assert card.input.frames == summary["frames"] == recipe["frames"], name
        if card.labels is not None:
            assert len(card.labels) == config.num_classes, name
        if entry.get("weights") is None:
            assert summary["weights"] is None and entry.get("dataset") is None, name
        else:
            assert summary["weights"] is not None and entry.get("dataset"), name
        patch = getattr(config, "patch_size", None)
        if patch:
            assert card.input.size % patch == 0, f"{name}: input size {card.input.size} vs patch {patch}"


def test_demo_motion_ships_with_four_direction_labels():
    model = load_model("demo-motion")
    assert model.labels == ["left", "right", "up", "down"]
    assert model.weights.endswith("model.safetensors")
