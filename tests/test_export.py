"""`vidcls export` and exported models on ONNX Runtime: every family, parity, predict, int8, errors.

Tiny models only (a few seconds per export); the full-size numbers come from
scripts/bench_onnx.py.
"""

import json
import random
import re
import sys

import pytest
import torch
from typer.testing import CliRunner

import vidcls
from vidcls.bench.models import resolve_models
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.export import parity as parity_module
from vidcls.export.formats import export_model
from vidcls.export.parity import FP32_TOLERANCE
from vidcls.models import families
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.zoo.catalog import zoo_entries
from vidcls.zoo.onnx import CARD_KEY, EXPORT_KEY, OnnxModule, read_metadata
from vidcls.zoo.resolve import load_model

runner = CliRunner()

# one tiny model per family; c-vidtr-tiny is vidtr with topK_std pooling (topk + gather)
FAMILY_CASES = {"joint": "joint-tiny", "divided": "divided-tiny", "xvit": "xvit-tiny", "vidtr": "c-vidtr-tiny",
                "ff-linear": "ff-linear-tiny"}
COMPACT_ARCH = {"num_classes": 4, "num_frames": 8, "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 4,
                "num_heads": 4, "head_dropout": 0.0, "pool_layers": [1, 2], "pool_tau": [4, 2]}


def random_weights_dir(tmp_path, family, arch, name):
    """A model directory with random weights and labels (exports need trained-looking models)."""
    from vidcls.models import build_model
    from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir

    torch.manual_seed(0)
    card = ModelCard(name=name, family=family, arch=arch, labels=list(DIRECTIONS),
                     input=InputSpec(frames=8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    return save_model_dir(tmp_path / name, card, build_model(family, arch))


def test_every_family_is_covered():
    # xclip exports with a label set folded in: tests/test_xclip.py (test_onnx_export_folds_the_label_set...)
    assert {*FAMILY_CASES, "vidtr-compact", "xclip"} == set(families())


@pytest.mark.parametrize("family", [*FAMILY_CASES, "vidtr-compact"])
def test_every_family_exports_and_matches_torch_on_onnx_runtime(tmp_path, family):
    arch = COMPACT_ARCH if family == "vidtr-compact" else zoo_entries()[FAMILY_CASES[family]]["arch"]
    ref = str(random_weights_dir(tmp_path, family, arch, f"{family}-tiny"))
    report = export_model(ref, tmp_path / "m.onnx")
    assert report.family == family and report.parity.max_abs_diff <= FP32_TOLERANCE
    torch_model = load_model(ref)
    onnx_model = load_model(str(tmp_path / "m.onnx"))
    assert isinstance(onnx_model.module, OnnxModule) and onnx_model.card.family == family
    video = torch.randn(3, 3, 8, 32, 32)  # a batch size the export never saw: the batch axis is dynamic
    with torch.inference_mode():
        expected, got = torch_model.module(video), onnx_model.module(video)
    assert got.shape == expected.shape == (3, 4)
    assert (got - expected).abs().max() <= FP32_TOLERANCE


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    """demo-motion exported fp32 and int8, and the CLI's output of both exports."""
    root = tmp_path_factory.mktemp("onnx")
    results = {}
    for kind, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        result = runner.invoke(app, ["export", "demo-motion", "--out", str(root / f"{kind}.onnx"), *extra])
        assert result.exit_code == 0, result.output
        results[kind] = result
    return root, results


def test_export_writes_the_card_into_the_onnx_metadata(demo_onnx):
    root, results = demo_onnx
    assert results["fp32"].stdout.strip() == str(root / "fp32.onnx")
    assert "parity: max |logit diff|" in results["fp32"].stderr
    assert "top-1 agreement" in results["int8"].stderr and "KL" in results["int8"].stderr
    metadata = read_metadata(root / "fp32.onnx")
    config = json.loads(metadata[CARD_KEY])
    assert config["family"] == "joint" and config["id2label"] == {"0": "left", "1": "right", "2": "up", "3": "down"}
    assert config["input"]["frames"] == 8 and config["input"]["aspect"] == "squash"
    facts = json.loads(metadata[EXPORT_KEY])
    assert facts["gmacs"] > 0 and facts["quantize"] is None and facts["batch"] == "dynamic"
    assert json.loads(read_metadata(root / "int8.onnx")[EXPORT_KEY])["quantize"] == "int8"
    model = load_model(str(root / "int8.onnx"))
    assert model.name == "demo-motion" and model.labels == ["left", "right", "up", "down"]


def test_int8_is_smaller_and_agrees_with_fp32_on_demo_motion(demo_onnx, tmp_path):
    root, _ = demo_onnx
    assert (root / "int8.onnx").stat().st_size < 0.7 * (root / "fp32.onnx").stat().st_size
    rng, paths = random.Random(7), []
    for i in range(24):
        direction = DIRECTIONS[i % 4]
        spec = random_spec(rng, direction=direction, height=64, width=80, frames=16)
        write_video(tmp_path / f"{i}.mp4", render_clip(spec))
        paths.append(tmp_path / f"{i}.mp4")
    fp32 = vidcls.predict(paths, "demo-motion", top_k=1)
    int8 = vidcls.predict(paths, str(root / "int8.onnx"), top_k=1)
    agree = sum(a.top_k[0]["label"] == b.top_k[0]["label"] for a, b in zip(fp32, int8, strict=True)) / len(paths)
    assert agree >= 0.95


def test_predict_on_an_onnx_file_gives_the_torch_top_k(demo_onnx, tmp_path):
    root, _ = demo_onnx
    clip = tmp_path / "up.mp4"
    assert runner.invoke(app, ["sample-clip", str(clip), "--direction", "up"]).exit_code == 0
    runs = {}
    for name, ref in (("torch", "demo-motion"), ("onnx", str(root / "fp32.onnx"))):
        result = runner.invoke(app, ["predict", str(clip), "--model", ref, "--top-k", "4", "--json"])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)[0]
    torch_top, onnx_top = runs["torch"]["top_k"], runs["onnx"]["top_k"]
    assert [t["label"] for t in onnx_top] == [t["label"] for t in torch_top]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(onnx_top, torch_top, strict=True))
    assert runs["onnx"]["model"] == "demo-motion" and runs["onnx"]["gmacs"] == runs["torch"]["gmacs"]
    # a directory holding model.onnx (and no torch weights) is an ONNX model too; a loaded one works as well
    directory = tmp_path / "exported"
    directory.mkdir()
    (directory / "model.onnx").write_bytes((root / "fp32.onnx").read_bytes())
    loaded = vidcls.load_model(str(directory))
    assert isinstance(loaded.module, OnnxModule)
    [prediction] = vidcls.predict([clip], loaded, top_k=4)
    assert [t["label"] for t in prediction.top_k] == [t["label"] for t in torch_top]


def test_benchmark_puts_torch_and_onnx_side_by_side(demo_onnx, monkeypatch, tmp_path):
    root, _ = demo_onnx
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path))  # the roofline record
    refs = ["demo-motion", str(root / "fp32.onnx"), str(root / "int8.onnx")]
    models = resolve_models(refs)
    assert [m.runtime for m in models] == ["torch", "onnxruntime", "onnxruntime-int8"]
    assert [m.name for m in models] == refs
    with pytest.raises(UsageError, match="exported for 8 x 32 px clips"):
        models[1].check_shape(16, 32)
    report = vidcls.benchmark(refs, frames=[8], isolate=False, warmup=1, repeats=2)
    points = {p.runtime: p for p in report.points}
    assert set(points) == {"torch", "onnxruntime", "onnxruntime-int8"}
    assert points["onnxruntime"].gmacs == points["torch"].gmacs  # GMACs of the torch graph
    assert all(p.latency_ms > 0 and p.error is None for p in points.values())


def test_a_file_that_fails_parity_is_not_written(tmp_path, monkeypatch):
    forward = OnnxModule.forward
    monkeypatch.setattr(OnnxModule, "forward", lambda self, video: forward(self, video) + 1e-3)
    with pytest.raises(VidclsError,
                       match=r"does not match the torch model \(max \|logit diff\| 0\.001.*nothing written"):
        export_model("joint-tiny", tmp_path / "bad.onnx", allow_random=True)
    assert list(tmp_path.iterdir()) == []


def test_an_int8_file_that_disagrees_is_not_written(tmp_path, monkeypatch):
    forward = OnnxModule.forward
    monkeypatch.setattr(OnnxModule, "forward", lambda self, video: forward(self, video).roll(1, dims=-1))
    monkeypatch.setattr(parity_module, "SAMPLE_CLIPS", 4)
    with pytest.raises(VidclsError, match="top-1 agreement 0.0%"):
        export_model("demo-motion", tmp_path / "bad-int8.onnx", quantize="int8")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_one_line(demo_onnx, monkeypatch, tmp_path, some_file):
    root, _ = demo_onnx
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    result = runner.invoke(app, ["predict", some_file, "--model", str(root / "fp32.onnx")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: ONNX models need the optional package onnxruntime: pip install 'vidcls[onnx]' "
        "(onnx, onnxruntime, onnxscript)"]
    result = runner.invoke(app, ["export", "joint-tiny", "--allow-random", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "pip install 'vidcls[onnx]'" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_bad_options(tmp_path):
    result = runner.invoke(app, ["export", "joint-tiny", "--allow-random", "--out", str(tmp_path / "x.onnx"),
                                 "--batch", "none"])
    assert result.exit_code == 2 and "--batch must be dynamic|N" in result.output
    with pytest.raises(UsageError, match="is a .onnx file"):
        export_model("joint-tiny", tmp_path / "x.pt", allow_random=True)
    with pytest.raises(UsageError, match="no such file"):
        load_model(str(tmp_path / "missing.onnx"))


@pytest.mark.parametrize("out, extra, expected", [
    ("d.onnx", (), "--out {d.onnx} is a directory; an ONNX export is one .onnx file"),
    ("ov", (), "--out {ov} is a directory; an ONNX export is one .onnx file (an OpenVINO IR in a directory: "
               "--format openvino)"),
    ("link.onnx", (), "--out {link.onnx} is a directory"),
    ("d.xml", (), "--out {d.xml} is a directory; an OpenVINO IR is FILE.xml with FILE.bin beside it"),
    ("e.xml", (), "--out {e.xml}: {e.bin} is a directory"),
    ("file/x.onnx", (), "--out {file/x.onnx}: {file} is not a folder"),
    ("file/ir", ("--format", "openvino"), "--out {file/ir}: {file} is not a folder"),
    ("ov", ("--format", "openvino"), "--out {ov} exists and is not a vidcls export (the folder holds model.onnx)"),
])
def test_an_out_that_cannot_be_written_is_refused_before_the_export(tmp_path, monkeypatch, out, extra, expected):
    """`--out DIR.onnx` (an existing directory) ran the whole export, then failed renaming the checked file onto
    the directory: `internal error: IsADirectoryError` (23 s for demo-motion). Now refused first, exit 2, one
    line, and the export (even the model's loading) never starts; the library call refuses the same."""
    from vidcls.export import common

    for folder in ("d.onnx", "ov", "d.xml", "e.bin"):
        (tmp_path / folder).mkdir()
    (tmp_path / "ov" / "model.onnx").write_bytes(b"an earlier ONNX export")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "ov")
    (tmp_path / "file").write_text("a file, not a folder")
    started = []
    monkeypatch.setattr(common, "load_model", lambda *args, **kwargs: started.append(args))
    result = runner.invoke(app, ["export", "demo-motion", "--out", str(tmp_path / out), *extra])
    message = re.sub(r"\{(.*?)\}", lambda name: str(tmp_path / name.group(1)), expected)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.output
    assert len(result.stderr.splitlines()) == 1 and started == []
    with pytest.raises(UsageError, match=re.escape(message)):
        export_model("demo-motion", tmp_path / out, format=extra[1] if extra else None)
    assert started == [] and (tmp_path / "ov" / "model.onnx").read_bytes() == b"an earlier ONNX export"


def test_fixed_batch_and_shape(tmp_path):
    report = export_model("xvit-tiny", tmp_path / "b2.onnx", batch=2, frames=4, size=48, allow_random=True)
    assert (report.batch, report.frames, report.size) == (2, 4, 48)
    model = load_model(str(tmp_path / "b2.onnx"))
    assert (model.card.input.frames, model.card.input.size) == (4, 48)
    assert model.module(torch.randn(2, 3, 4, 48, 48)).shape == (2, 4)


def test_a_shape_the_model_cannot_take_is_one_clear_line(tmp_path):
    """The VidTr authors' embedding (added to the attention inputs) fixes the clip shape: exporting
    at another frame count says so, instead of torch.export's "Failed to export ... step 1/3"."""
    arch = {**zoo_entries()["vidtr-tiny"]["arch"], "embedding": "attention_input", "attention": "shared"}
    ref = str(random_weights_dir(tmp_path, "vidtr", arch, "fixed-vidtr"))
    result = runner.invoke(app, ["export", ref, "--frames", "16", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2, result.output
    expected = "cannot run on 16 frames of 32 px: this VidTr (embedding='attention_input') runs on 8 frames"
    assert expected in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_predict_refuses_frames_an_onnx_file_was_not_exported_at(demo_onnx, some_file):
    """An exported graph takes its own frame count only: another is exit 2 before any video is decoded."""
    root, _ = demo_onnx
    result = runner.invoke(app, ["predict", some_file, "--model", str(root / "fp32.onnx"),
                                 "--frames", "16"])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: demo-motion: exported for 8-frame clips, asked for 16; use --frames 8, or " \
                            "export it again at that count\n"
