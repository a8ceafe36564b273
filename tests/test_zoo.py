"""The pretrained zoo: models.yaml entries for the published checkpoints, listed, downloaded, used."""

import json

import pytest
import torch
from hub_helpers import add_to_hub_cache, hub_cache, save_transformers, tiny_transformers_model  # noqa: F401
from typer.testing import CliRunner

from vidcls.cli import app
from vidcls.convert.transformers import arch_from_config
from vidcls.synthetic import make_sample_clip
from vidcls.zoo import load_model, resolve_card, zoo_card, zoo_entries

pytest.importorskip("transformers")
runner = CliRunner()

PUBLISHED = {"timesformer-k400": ("facebook/timesformer-base-finetuned-k400", "refs/pr/5", "TimesformerConfig"),
             "videomae-k400": ("MCG-NJU/videomae-base-finetuned-kinetics", "main", "VideoMAEConfig"),
             "vivit-k400": ("google/vivit-b-16x2-kinetics400", "refs/pr/3", "VivitConfig")}
# The first classes of Kinetics-400, as the published configs name them; the rest are filler.
K400_HEAD = ["abseiling", "air drumming", "answering questions", "applauding", "applying cream"]


def test_models_lists_weights_source_and_labels():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, (repo, revision, _) in PUBLISHED.items():
        assert rows[name]["weights"] == f"hf://{repo}@{revision}"
        assert rows[name]["labels"] == "kinetics-400"
        assert rows[name]["top1"] and rows[name]["gmacs"] and "parity" in rows[name]["verified"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_yaml_arch_is_what_the_published_config_translates_to(name):
    """The offline description in models.yaml must match what loading the repository builds.

    transformers' default configs are these very ViT-B checkpoints' configs (but 2 labels).
    """
    import transformers

    config = getattr(transformers, PUBLISHED[name][2])().to_dict()
    family, arch = arch_from_config(config)
    card = zoo_card(name)
    assert family == card.family
    assert arch | {"num_classes": 400} == card.arch
    assert resolve_card(name) == card  # offline, no download


@pytest.fixture
def timesformer_k400_cache(hub_cache, tmp_path):
    """The Hub cache holding facebook/timesformer-base-finetuned-k400@refs/pr/5 — a tiny stand-in."""
    labels = K400_HEAD + [f"kinetics class {i}" for i in range(len(K400_HEAD), 400)]
    model = tiny_transformers_model("timesformer", labels=labels)
    with torch.no_grad():
        model.classifier.bias[:5] += 50.0  # a clear winner among the named classes
    source = save_transformers(model, tmp_path / "tsf", preprocessor={
        "image_mean": [0.45] * 3, "image_std": [0.225] * 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}})
    repo, revision, _ = PUBLISHED["timesformer-k400"]
    return add_to_hub_cache(hub_cache, repo, source, revision=revision)


def test_download_then_predict_with_kinetics_labels_offline(timesformer_k400_cache, tmp_path):
    download = runner.invoke(app, ["download", "timesformer-k400"])
    assert download.exit_code == 0, download.output
    assert str(timesformer_k400_cache) in download.output.replace("\n", "")

    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=16, height=48, width=64, seed=0)
    result = runner.invoke(app, ["predict", str(clip), "--model", "timesformer-k400", "--json", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    [prediction] = json.loads(result.stdout)
    assert prediction["model"] == "timesformer-k400"
    assert prediction["top_k"][0]["label"] in K400_HEAD
    assert prediction["frames_used"] == 8  # models.yaml recipe: 8 frames, 1 clip


def test_zoo_entry_takes_recipe_from_yaml_and_preprocessing_from_the_repo(timesformer_k400_cache):
    loaded = load_model("timesformer-k400")
    spec = loaded.card.input
    assert (spec.frames, spec.stride, spec.sampling, spec.clips, spec.crops) == (8, 32, "dense", 1, 3)
    assert spec.size == 32  # preprocessor_config.json wins over models.yaml's 224
    assert loaded.labels[:2] == K400_HEAD[:2] and loaded.name == "timesformer-k400"


def test_every_published_entry_is_in_the_zoo():
    assert set(PUBLISHED) <= set(zoo_entries())
