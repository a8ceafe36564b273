"""The pretrained zoo: models.yaml entries for the published checkpoints, listed, downloaded, used."""

import json

import pytest
import torch
from typer.testing import CliRunner

from authors_layouts import compact_authors_state, vidtr_authors_state
from hub_helpers import add_to_hub_cache, flip_byte, save_transformers, tiny_transformers_model
from vidcls.cli import app
from vidcls.models import build_model, make_config
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo.cache import converted_dir, lock_path
from vidcls.zoo.catalog import zoo_card, zoo_entries
from vidcls.zoo.convert import AUTHOR_LAYOUTS, infer_arch, to_vidcls
from vidcls.zoo.convert.transformers import arch_from_config
from vidcls.zoo.resolve import load_model, resolve

pytest.importorskip("transformers")
runner = CliRunner()

PUBLISHED = {"timesformer-k400": ("facebook/timesformer-base-finetuned-k400", "refs/pr/5", "TimesformerConfig"),
             "videomae-k400": ("MCG-NJU/videomae-base-finetuned-kinetics", "main", "VideoMAEConfig"),
             "vivit-k400": ("google/vivit-b-16x2-kinetics400", "refs/pr/3", "VivitConfig")}
# The first classes of Kinetics-400, as the published configs name them; the rest are filler.
K400_HEAD = ["abseiling", "air drumming", "answering questions", "applauding", "applying cream"]


def test_every_shipped_entry_passes_the_checks_a_user_zoo_file_gets():
    """Reading the shipped models.yaml skips the entry checks (they import torch for the families'
    configs, and `vidcls models` must not): they run here instead, with the torch-free copy of the layouts."""
    from vidcls.zoo import entries

    for name, entry in zoo_entries().items():
        assert entries.entry_problem(entry) is None, name
    assert entries.AUTHOR_LAYOUT_FAMILIES == {layout: module.FAMILY for layout, module in AUTHOR_LAYOUTS.items()}


def test_models_lists_weights_source_and_labels():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, (repo, revision, _) in PUBLISHED.items():
        assert rows[name]["weights"] == f"hf://{repo}@{revision}"
        assert rows[name]["labels"] == "kinetics-400"
        assert rows[name]["top1"] and rows[name]["gmacs"] and "parity" in rows[name]["verified"]


# The authors' released checkpoints outside the Hub (their READMEs): file, label set, top-1, views.
AUTHORS_FILES = {
    "xvit-k600": ("www.adrianbulat.com/downloads/NeurIPS2021/models/xvit_b16_16_k600.pth", "kinetics-600",
                  84.51, "1x3"),
    "xvit-ssv2": ("www.adrianbulat.com/downloads/NeurIPS2021/models/xvit_b16_16_ss2.pth", "something-something-v2",
                  67.19, "2x3"),
    "vidtr-s-k400": ("gluonmm.s3.amazonaws.com/pretrained/vidtr_s_8x8_patch16_224_k400.pth", "kinetics-400",
                     77.7, "10x3"),
    "vidtr-m-k400": ("gluonmm.s3.amazonaws.com/pretrained/vidtr_m_16x4_patch16_224_k400.pth", "kinetics-400",
                     78.6, "10x3"),
    "vidtr-l-k400": ("gluonmm.s3.amazonaws.com/pretrained/vidtr_l_32x2_patch16_224_k400.pth", "kinetics-400",
                     79.1, "10x3"),
    "c-vidtr-s-k400": ("gluonmm.s3.amazonaws.com/pretrained/cvidtr_s_8x8_patch16_224_k400.pth", "kinetics-400",
                       75.7, "10x3"),
    "c-vidtr-m-k400": ("gluonmm.s3.amazonaws.com/pretrained/cvidtr_m_16x4_patch16_224_k400.pth", "kinetics-400",
                       76.7, "10x3"),
}


def test_models_lists_the_authors_checkpoints_with_their_urls_and_published_numbers():
    result = runner.invoke(app, ["models", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, (url, labels, top1, views) in AUTHORS_FILES.items():
        row = rows[name]
        assert row["weights"] == f"https://{url}" and row["labels"] == labels and row["zoo"] == "vidcls"
        assert (row["top1"], row["top1_views"]) == (top1, views) and row["gmacs"]
        assert row["views"] == {"1x3": 3, "2x3": 6, "10x3": 30}[views]  # the recipe tests as the authors did
        assert "layout only" in row["verified"]  # the files themselves are not verified (no pinned sha256)
        assert len(zoo_card(name).labels) == zoo_card(name).arch["num_classes"]


# zoo entry -> (the authors' state-dict builder, frames): their ViT-B is 768 wide, 12 blocks, MLP 3072, 14 x 14 patches
AUTHORS_VIDTR = {"vidtr-s": (vidtr_authors_state, 8), "vidtr-m": (vidtr_authors_state, 16),
                 "vidtr-l": (vidtr_authors_state, 32), "c-vidtr-s": (compact_authors_state, 8),
                 "c-vidtr-m": (compact_authors_state, 16)}


@pytest.mark.parametrize("name", sorted(AUTHORS_VIDTR))
def test_vidtr_entries_are_the_authors_models(name):
    """The weight-less entries build what the released checkpoints convert to: same keys, same shapes,
    and the options `vidcls convert` sets for them (their NHEAD is 12); the -k400 entries share them."""
    build, frames = AUTHORS_VIDTR[name]
    state, unused, layout = to_vidcls(build(768, 12, frames, patches=196, patch=16, classes=400, mlp=3072, meta=True))
    card = zoo_card(name)
    assert layout == card.family and not unused
    with torch.device("meta"):
        model = build_model(card.family, card.arch)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    converted = infer_arch(state, card.family) | AUTHOR_LAYOUTS[layout].arch_hints(state, {})
    assert make_config(card.family, card.arch) == make_config(card.family, converted)
    assert zoo_card(f"{name}-k400").arch == card.arch and zoo_card(f"{name}-k400").input == card.input


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
    assert resolve(name, need_weights=False).card == card  # offline, no download


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


@pytest.fixture
def timesformer_main_only(hub_cache, tmp_path):
    """facebook/timesformer-base-finetuned-k400 as main holds it: config + pytorch_model.bin only."""
    model = tiny_transformers_model("timesformer", labels=K400_HEAD)
    model.save_pretrained(tmp_path / "bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # the legacy format
    assert {p.name for p in (tmp_path / "bin").iterdir()} == {"config.json", "pytorch_model.bin"}
    return model, add_to_hub_cache(hub_cache, PUBLISHED["timesformer-k400"][0], tmp_path / "bin", revision="main")


def logits_gap(reference, loaded) -> float:
    video = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        return (reference(pixel_values=video).logits - loaded.module(video.transpose(1, 2))).abs().max().item()


def test_pinned_safetensors_absent_falls_back_to_converting_the_pickle(timesformer_main_only):
    """Offline, refs/pr/5 is not cached but main's .bin is: it is verified, converted once, cached."""
    reference, snapshot = timesformer_main_only
    loaded = load_model("timesformer-k400")
    assert logits_gap(reference, loaded) <= 1e-4
    assert loaded.labels == K400_HEAD and loaded.card.input.frames == 8
    digest = (snapshot / "pytorch_model.bin").resolve().name
    assert loaded.weights == str(converted_dir(digest) / "model.safetensors")
    locked = json.loads(lock_path().read_text())["files"]
    assert locked == {f"{PUBLISHED['timesformer-k400'][0]}@{snapshot.name}/pytorch_model.bin": digest}
    download = runner.invoke(app, ["download", "timesformer-k400"])
    assert download.exit_code == 0, download.output


def test_revision_known_to_lack_the_file_falls_back_too(timesformer_main_only, hub_cache, tmp_path):
    """The cache remembers that refs/pr/5 has no model.safetensors (a 404 seen earlier)."""
    reference, _ = timesformer_main_only
    (tmp_path / "pr").mkdir()
    reference.config.to_json_file(tmp_path / "pr" / "config.json")
    pr = add_to_hub_cache(hub_cache, PUBLISHED["timesformer-k400"][0], tmp_path / "pr", revision="refs/pr/5")
    missing = pr.parents[1] / ".no_exist" / pr.name / "model.safetensors"
    missing.parent.mkdir(parents=True)
    missing.touch()
    assert logits_gap(reference, load_model("timesformer-k400")) <= 1e-4


def test_corrupt_fallback_pickle_is_refused(timesformer_main_only, some_file):
    _, snapshot = timesformer_main_only
    flip_byte((snapshot / "pytorch_model.bin").resolve())
    result = runner.invoke(app, ["predict", some_file, "--model", "timesformer-k400"])
    assert result.exit_code == 1 and "fails its checksum" in result.output
    assert not (snapshot / "pytorch_model.bin").exists()


def test_nothing_cached_names_the_pinned_revision(hub_cache):
    result = runner.invoke(app, ["download", "timesformer-k400"])
    assert result.exit_code == 1
    assert "refs/pr/5" in result.output and "HF_HUB_OFFLINE=1" in result.output
    assert "Traceback" not in result.output


def test_benchmark_needs_only_the_architecture_offline(hub_cache, some_file):
    """A Hub zoo entry is costed from models.yaml alone: no weights, no network, an empty cache stays empty."""
    result = runner.invoke(app, ["benchmark", "--model", "timesformer-k400", "--frames", "2", "--size", "32",
                                 "--repeats", "1", "--warmup", "0", "--in-process", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["model"] == "timesformer-k400" and row["error"] is None
    assert 120e6 < row["params"] < 123e6  # TimeSformer ViT-B/16 with its 400-class head
    assert not any(hub_cache.iterdir())
    refused = runner.invoke(app, ["predict", some_file, "--model", "timesformer-k400"])
    assert refused.exit_code == 1 and "not in the local Hub cache" in refused.output  # predict does need them
