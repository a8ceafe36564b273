"""X-CLIP: the xclip family against transformers' XCLIPModel (tiny, random weights, converted by vidcls),
its tokenizer against transformers', the label set (`set_labels`, `--labels`), zero-shot evaluate,
embeddings of videos and texts, export with a fixed label set, and models without a text side."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from hub_helpers import add_to_hub_cache
from vidcls.cli import app
from vidcls.errors import UsageError
from vidcls.inference.options import RunOptions, parse_labels
from vidcls.models import build_model
from vidcls.models.clip_tokenizer import ClipTokenizer
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo.catalog import zoo_card
from vidcls.zoo.convert import convert_checkpoint
from vidcls.zoo.resolve import load_model
from xclip_helpers import reference_tokenizer, save_tiny_xclip, write_vocab

runner = CliRunner()
LABEL_SETS = [["cooking", "playing guitar", "repairing a bike"],
              ["a", "ball", "dancing", "a video of dancing ball", "bike", "Cooking!"],
              ["video"]]
TEXTS = ["cooking", "playing guitar", "Repairing a  bike!", "a video of dancing ball", "x", "ÉTÉ 42 d'or"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(transformers' XCLIPModel, its saved directory with tokenizer.json, the reference tokenizer)."""
    root = tmp_path_factory.mktemp("xclip")
    model, directory = save_tiny_xclip(root / "model")
    return model, directory, reference_tokenizer(root / "vocab")


def reference_logits(model, tokenizer, video: torch.Tensor, labels: list[str]) -> torch.Tensor:
    ids = tokenizer(labels, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids.input_ids, attention_mask=ids.attention_mask,
                     pixel_values=video.transpose(1, 2)).logits_per_video


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.json + merges.txt"])
def test_tokenizer_gives_transformers_ids(tiny, tmp_path, source):
    _, directory, reference = tiny
    if source == "tokenizer.json":
        ours = ClipTokenizer.from_directory(directory, context_length=16)
    else:
        ours = ClipTokenizer.from_directory(write_vocab(tmp_path), context_length=16)
    for text in TEXTS:
        expected = reference(text, truncation=True, max_length=16).input_ids
        assert ours([text])[0, :len(expected)].tolist() == expected, text
    assert ours(["a " * 40])[0].tolist()[-1] == ours([""])[0, 1].item()  # cut to the context, end token kept


def test_logits_equal_transformers_for_several_label_sets(tiny):
    model, directory, reference = tiny
    loaded = load_model(str(directory))
    assert loaded.card.family == "xclip" and loaded.has_text
    torch.manual_seed(1)
    video = torch.randn(2, 3, 4, 32, 32)
    for labels in LABEL_SETS:
        loaded.use_labels(labels)
        with torch.no_grad():
            ours = loaded.module(video)
        expected = reference_logits(model, reference, video, labels)
        assert ours.shape == expected.shape == (2, len(labels))
        assert (ours - expected).abs().max() < 1e-4, labels
        assert loaded.labels == labels and loaded.module.num_classes == len(labels)


def test_video_and_text_embeddings_are_transformers_features(tiny):
    model, directory, reference = tiny
    loaded = load_model(str(directory))
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ours = loaded.module.forward_head(loaded.module.forward_features(video), pre_logits=True)
        expected = model.get_video_features(pixel_values=video.transpose(1, 2)).pooler_output
        texts = ["cooking", "playing guitar"]
        ids = reference(texts, padding=True, return_tensors="pt")
        text_expected = model.get_text_features(**ids).pooler_output
        assert (ours - expected).abs().max() < 1e-4
        assert (loaded.module.encode_text(texts) - text_expected).abs().max() < 1e-4


def test_set_labels_encodes_each_label_set_once(tiny):
    _, directory, _ = tiny
    module = load_model(str(directory)).module
    calls = []
    module.text.register_forward_hook(lambda *_: calls.append(1))
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        module.set_labels(LABEL_SETS[0])
        first = module(video)
        module(video)
        assert len(calls) == 1  # once for the label set, not once per forward pass
        module.set_labels(LABEL_SETS[1])
        module(video)
        module.set_labels(LABEL_SETS[0])  # cached: no new encoding
        assert torch.equal(module(video), first)
    assert len(calls) == 2
    module.set_labels(["a video"], encode=False)  # deferred to the first forward pass that needs it
    assert len(calls) == 2
    with torch.no_grad():
        module(video)
    assert len(calls) == 3


def test_other_frame_counts_interpolate_the_time_table_with_a_warning(tiny):
    _, directory, _ = tiny
    module = load_model(str(directory)).module
    with pytest.warns(UserWarning, match="interpolating"), torch.no_grad():
        assert module(torch.randn(1, 3, 6, 32, 32)).shape == (1, module.num_classes)


def test_random_xclip_builds_and_refuses_reset_classifier():
    model = build_model("xclip", {"num_classes": 5, "num_frames": 4, "img_size": 32, "patch_size": 8,
                                  "embed_dim": 32, "depth": 1, "num_heads": 4, "projection_dim": 16, "mit_heads": 2,
                                  "text_dim": 16, "text_depth": 1, "text_heads": 2, "vocab_size": 64,
                                  "prompt_heads": 2})
    assert model(torch.randn(2, 3, 4, 32, 32)).shape == (2, 5)
    with pytest.raises(UsageError, match="built from text"):
        model.reset_classifier(3)
    with pytest.raises(UsageError, match="no tokenizer"):
        model.set_labels(["a", "b"])


def test_labels_parsing(tmp_path):
    assert parse_labels("cooking, repairing a bike ,playing guitar") == ("cooking", "repairing a bike",
                                                                          "playing guitar")
    names = tmp_path / "names.txt"
    names.write_text("# my classes\ncooking\n\nrepairing a bike\n")
    assert parse_labels(f"@{names}") == ("cooking", "repairing a bike")
    assert RunOptions(labels=["a", "b"]).labels == ("a", "b")
    for bad, why in (("a,,b", "empty name"), ("a,", "empty name"), ("", "empty name"), ("a,a", "twice"),
                     (f"@{tmp_path / 'missing.txt'}", "cannot read"), ([], "no labels")):
        with pytest.raises(UsageError, match=why):
            RunOptions(labels=bad)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="no labels"):
        parse_labels(f"@{tmp_path / 'empty.txt'}")
    with pytest.raises(UsageError, match="no {}"):
        RunOptions(labels="a", prompt="a video")


@pytest.fixture
def clips(tmp_path):
    return [make_sample_clip(tmp_path / f"{name}.mp4", direction=name, frames=12, height=40, width=40, seed=i)
            for i, name in enumerate(("left", "right"))]


def test_predict_with_labels_and_prompt(tiny, clips, tmp_path):
    _, directory, _ = tiny
    names = tmp_path / "names.txt"
    names.write_text("cooking\nplaying guitar\nrepairing a bike\n")
    for labels in ("cooking,playing guitar,repairing a bike", f"@{names}"):
        result = runner.invoke(app, ["predict", *map(str, clips), "--model", str(directory), "--labels", labels,
                                     "--prompt", "a video of {}", "--json", "--top-k", "3"])
        assert result.exit_code == 0, result.output
        records = json.loads(result.stdout)
        assert [sorted(item["label"] for item in r["top_k"]) for r in records] == \
            [["cooking", "playing guitar", "repairing a bike"]] * 2
    timeline = runner.invoke(app, ["predict", str(clips[0]), "--model", str(directory), "--labels", "cooking,bike",
                                   "--timeline", "--window", "0.6", "--json"])
    assert timeline.exit_code == 0, timeline.output
    [record] = json.loads(timeline.stdout)
    assert {w["top_k"][0]["label"] for w in record["timeline"]} <= {"cooking", "bike"}


def test_runtime_openvino_scores_each_label_set_as_torch_does(tiny, clips, monkeypatch):
    """--runtime openvino converts the model with the run's label set folded in: each set (and prompt) gets
    its own graph, never the cached graph of another set, and its scores are torch's."""
    pytest.importorskip("openvino")
    from vidcls.zoo.openvino import OpenVinoModule

    _, directory, _ = tiny
    calls = []
    run = OpenVinoModule.run
    monkeypatch.setattr(OpenVinoModule, "run", lambda self, feed: calls.append(len(feed)) or run(self, feed))
    for labels, prompt in (("cooking,bike,dance", []), ("running,jumping", []), ("cooking,bike,dance", []),
                           ("running,jumping", ["--prompt", "a video of {}"])):
        answers = {}
        for runtime in ("torch", "openvino"):
            before = len(calls)
            result = runner.invoke(app, ["predict", *map(str, clips), "--model", str(directory), "--labels", labels,
                                         *prompt, "--runtime", runtime, "--json"])
            assert result.exit_code == 0, result.output
            assert (len(calls) > before) == (runtime == "openvino")  # the runtime asked for is the one that ran
            answers[runtime] = [{t["label"]: t["score"] for t in r["top_k"]} for r in json.loads(result.stdout)]
        for torch_scores, openvino_scores in zip(answers["torch"], answers["openvino"], strict=True):
            assert set(torch_scores) == set(openvino_scores) == set(labels.split(","))
            assert all(abs(torch_scores[name] - openvino_scores[name]) < 1e-4 for name in torch_scores), labels


def test_a_text_model_without_labels_asks_for_them(tiny, clips):
    _, directory, _ = tiny  # a transformers directory outside the zoo: no default label set
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", str(directory)])
    assert result.exit_code == 2 and "--labels" in result.output


def test_labels_on_a_model_without_a_text_side_is_a_usage_error(clips):
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", "demo-motion", "--labels", "a,b"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no text side" in result.output
    empty = runner.invoke(app, ["predict", str(clips[0]), "--model", "demo-motion", "--labels", "a,,b"])
    assert empty.exit_code == 2 and "empty name" in empty.output


def test_zero_shot_evaluate_uses_the_data_class_names(tiny, tmp_path):
    _, directory, _ = tiny
    data = tmp_path / "data"
    for i, name in enumerate(("playing_guitar", "cooking")):
        (data / name).mkdir(parents=True)
        make_sample_clip(data / name / "a.mp4", direction="left", frames=12, height=40, width=40, seed=i)
    result = runner.invoke(app, ["evaluate", "--model", str(directory), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["zero_shot"] is True and summary["evaluated"] == 2
    assert summary["confusion"]["classes"] == ["cooking", "playing_guitar"]
    table = runner.invoke(app, ["evaluate", "--model", str(directory), "--data", str(data)])
    assert table.exit_code == 0 and "zero-shot" in table.output


def test_embed_videos_and_texts_in_one_space(tiny, clips):
    _, directory, _ = tiny
    videos = runner.invoke(app, ["embed", *map(str, clips), "--model", str(directory), "--json", "--normalize"])
    assert videos.exit_code == 0, videos.output
    texts = runner.invoke(app, ["embed", "--text", "cooking,playing guitar", "--model", str(directory),
                                "--normalize"])
    assert texts.exit_code == 0, texts.output
    video_vectors = torch.tensor([r["embedding"] for r in json.loads(videos.stdout)])
    text_records = json.loads(texts.stdout)
    text_vectors = torch.tensor([r["embedding"] for r in text_records])
    assert video_vectors.shape[1] == text_vectors.shape[1] == 24  # the joint space (projection_dim)
    assert [r["text"] for r in text_records] == ["cooking", "playing guitar"]
    assert torch.allclose(text_vectors.norm(dim=1), torch.ones(2), atol=1e-5)
    refused = runner.invoke(app, ["embed", "--text", "a,b", "--model", "demo-motion"])
    assert refused.exit_code == 2 and "no text side" in refused.output


def test_convert_keeps_the_tokenizer_and_takes_labels(tiny, tmp_path, clips):
    _, directory, _ = tiny
    report = convert_checkpoint(directory, "xclip", tmp_path / "converted", labels=["cooking", "dancing"])
    assert not report.missing and not report.unexpected
    assert (tmp_path / "converted" / "tokenizer.json").is_file()
    loaded = load_model(str(tmp_path / "converted"))
    assert loaded.labels == ["cooking", "dancing"]
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", str(tmp_path / "converted"), "--json"])
    assert result.exit_code == 0, result.output
    assert {item["label"] for item in json.loads(result.stdout)[0]["top_k"]} == {"cooking", "dancing"}


def test_vocab_and_merges_only_repository_loads(tiny, tmp_path):
    _, directory, _ = tiny
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("tokenizer*"))
    write_vocab(copy)
    loaded = load_model(str(copy))
    loaded.use_labels(["cooking", "bike"])
    assert loaded.module(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)


def test_onnx_export_folds_the_label_set_and_passes_parity(tiny, tmp_path, clips):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _, directory, _ = tiny
    out = tmp_path / "xclip.onnx"
    result = runner.invoke(app, ["export", str(directory), "--out", str(out), "--labels", "cooking,bike,guitar",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["parity"]["max_abs_diff"] < 1e-4
    exported = load_model(str(out))
    assert exported.labels == ["cooking", "bike", "guitar"] and not exported.has_text
    refused = runner.invoke(app, ["predict", str(clips[0]), "--model", str(out), "--labels", "a,b"])
    assert refused.exit_code == 2 and "exported" in refused.output


def test_zoo_entry_from_the_hub_cache_has_kinetics_labels_and_takes_others(hub_cache, tmp_path):
    """xclip-b32 as the Hub holds it (a tiny stand-in: config, safetensors, tokenizer, preprocessor), offline."""
    _, source = save_tiny_xclip(tmp_path / "repo", frames=8)
    add_to_hub_cache(hub_cache, "microsoft/xclip-base-patch32", source)
    assert zoo_card("xclip-b32").labels[:2] == ["abseiling", "air drumming"]  # offline: models.yaml's dataset
    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=12, height=40, width=40, seed=0)
    result = runner.invoke(app, ["predict", str(clip), "--model", "xclip-b32", "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    loaded = load_model("xclip-b32")
    assert len(loaded.labels) == 400 and record["top_k"][0]["label"] in loaded.labels
    assert loaded.card.input.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # the repository's own
    relabelled = runner.invoke(app, ["predict", str(clip), "--model", "xclip-b32", "--labels", "cooking,bike",
                                     "--json"])
    assert relabelled.exit_code == 0, relabelled.output
    assert {item["label"] for item in json.loads(relabelled.stdout)[0]["top_k"]} == {"cooking", "bike"}


def test_openvino_export_folds_the_label_set_and_passes_parity(tiny, tmp_path):
    pytest.importorskip("openvino")
    _, directory, _ = tiny
    out = tmp_path / "xclip.xml"
    result = runner.invoke(app, ["export", str(directory), "--out", str(out), "--labels", "cooking,bike", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["max_abs_diff"] < 1e-4
    assert load_model(str(out)).labels == ["cooking", "bike"]
