"""OpenVINO as a runtime: `--runtime openvino` (converted once, cached), `export --format openvino`
(fp32 parity, NNCF int8 behind the agreement gate), IRs as --model, the missing extra.

Tiny models only (seconds per conversion); the full-size numbers come from scripts/bench_runtimes.py.
"""

import json
import random
import sys

import pytest
import torch
from typer.testing import CliRunner

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.export import openvino as export_openvino_module
from vidcls.export.formats import export_model
from vidcls.export.parity import FP32_TOLERANCE
from vidcls.inference.options import TimelineOptions
from vidcls.models import build_model, families
from vidcls.video.encode import write_video
from vidcls.video.synthetic import make_sample_clip, random_spec, render_clip
from vidcls.zoo import openvino_convert
from vidcls.zoo.cache import home
from vidcls.zoo.catalog import zoo_entries
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir
from vidcls.zoo.openvino import OpenVinoModule, precision_hint, read_ir, read_ir_card
from vidcls.zoo.resolve import LoadedModel, load_model
from vidcls.zoo.runtime import RuntimeModule

runner = CliRunner()

# one tiny model per family (c-vidtr-tiny: vidtr with topK_std pooling)
FAMILY_CASES = {"joint": "joint-tiny", "divided": "divided-tiny", "xvit": "xvit-tiny", "vidtr": "c-vidtr-tiny",
                "ff-linear": "ff-linear-tiny"}
COMPACT_ARCH = {"num_classes": 4, "num_frames": 8, "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 4,
                "num_heads": 4, "head_dropout": 0.0, "pool_layers": [1, 2], "pool_tau": [4, 2]}


def model_dir(path, family, arch, seed=0):
    """A model directory with seeded random weights and the four direction labels."""
    torch.manual_seed(seed)
    card = ModelCard(name=path.name, family=family, arch=arch, labels=list(DIRECTIONS),
                     input=InputSpec(frames=8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    return save_model_dir(path, card, build_model(family, arch))


def test_every_family_is_covered():
    # xclip exports with a label set folded in: tests/test_xclip.py (test_openvino_export_folds_the_label_set...)
    assert {*FAMILY_CASES, "vidtr-compact", "xclip"} == set(families())


@pytest.mark.parametrize("family", [*FAMILY_CASES, "vidtr-compact"])
def test_every_family_exports_to_openvino_and_matches_torch(tmp_path, family):
    arch = COMPACT_ARCH if family == "vidtr-compact" else zoo_entries()[FAMILY_CASES[family]]["arch"]
    ref = str(model_dir(tmp_path / f"{family}-tiny", family, arch))
    report = export_model(ref, tmp_path / "m.xml")
    assert report.format == "openvino" and report.opset is None
    assert report.family == family and report.parity.max_abs_diff <= FP32_TOLERANCE
    assert (tmp_path / "m.bin").is_file()
    torch_model, ir_model = load_model(ref), load_model(str(tmp_path / "m.xml"))
    assert isinstance(ir_model.module, OpenVinoModule) and ir_model.card.family == family
    video = torch.randn(3, 3, 8, 32, 32)  # a batch size the conversion never saw: the batch axis is dynamic
    with torch.inference_mode():
        expected, got = torch_model.module(video), ir_model.module(video)
    assert got.shape == expected.shape == (3, 4)
    assert (got - expected).abs().max() <= FP32_TOLERANCE


@pytest.fixture(scope="module")
def demo_ir(tmp_path_factory):
    """demo-motion exported as an fp32 IR file and an int8 IR directory, and the CLI's output of both."""
    root = tmp_path_factory.mktemp("ir")
    results = {}
    for kind, extra in (("fp32", ["--out", str(root / "fp32.xml")]),
                        ("int8", ["--out", str(root / "int8"), "--format", "openvino", "--quantize", "int8"])):
        result = runner.invoke(app, ["export", "demo-motion", *extra])
        assert result.exit_code == 0, result.output
        results[kind] = result
    return root, results


def test_export_writes_the_card_into_the_ir(demo_ir):
    root, results = demo_ir
    assert results["fp32"].stdout.strip() == str(root / "fp32.xml")
    assert "OpenVINO IR, fp32" in results["fp32"].stderr and "parity: max |logit diff|" in results["fp32"].stderr
    assert "top-1 agreement" in results["int8"].stderr and "KL" in results["int8"].stderr
    card, facts = read_ir_card(root / "fp32.xml")
    config = card.to_config()
    assert config["family"] == "joint" and config["id2label"] == {"0": "left", "1": "right", "2": "up", "3": "down"}
    assert config["input"]["frames"] == 8 and config["input"]["aspect"] == "squash"
    assert facts["gmacs"] > 0 and facts["quantize"] is None and facts["batch"] == "dynamic"
    assert facts["parity"]["max_abs_diff"] <= FP32_TOLERANCE
    card, facts = read_ir_card(root / "int8" / "model.xml")  # a directory holding model.xml is an IR too
    assert facts["quantize"] == "int8" and facts["calibration"] == "the sample clips"
    assert facts["parity"]["top1_agreement"] >= 0.9
    model = load_model(str(root / "int8"))
    assert model.name == "demo-motion" and model.labels == ["left", "right", "up", "down"]


def rendered_clips(directory, count, seed=7):
    """Moving-shape clips in every direction, drawn with settings the sample clips do not use."""
    rng, paths = random.Random(seed), []
    for i in range(count):
        spec = random_spec(rng, direction=DIRECTIONS[i % 4], height=64, width=80, frames=16)
        write_video(directory / f"{i}.mp4", render_clip(spec))
        paths.append(directory / f"{i}.mp4")
    return paths


def test_int8_ir_is_int8_and_agrees_with_fp32_on_demo_motion(demo_ir, tmp_path):
    root, _ = demo_ir
    model = read_ir(root / "int8" / "model.xml")
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # NNCF quantised it
    paths = rendered_clips(tmp_path, 24)
    fp32 = vidcls.predict(paths, "demo-motion", top_k=1)
    int8 = vidcls.predict(paths, str(root / "int8"), top_k=1)
    agree = sum(a.top_k[0]["label"] == b.top_k[0]["label"] for a, b in zip(fp32, int8, strict=True)) / len(paths)
    assert agree >= 0.95


def test_an_int8_ir_that_disagrees_is_not_written(tmp_path, monkeypatch):
    """The gate, not the quantiser, decides: an "int8" model whose head names the classes in another
    order (logits rolled by one) agrees on no clip and is refused, and nothing is written."""
    disagreeing = load_model("demo-motion").module
    with torch.no_grad():
        head = disagreeing.get_classifier()
        head.weight.copy_(head.weight.roll(1, dims=0))
        head.bias.copy_(head.bias.roll(1, dims=0))

    def quantize(model, card, batch, videos):
        return openvino_convert.convert_module(disagreeing, card, batch)

    monkeypatch.setattr(export_openvino_module, "quantize_int8", quantize)
    with pytest.raises(VidclsError, match=r"top-1 agreement 0\.0% \(minimum 90%\).*nothing written"):
        export_model("demo-motion", tmp_path / "bad.xml", quantize="int8")
    assert list(tmp_path.iterdir()) == []


def test_int8_calibrates_on_the_given_clips(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    rendered_clips(clips, 3, seed=3)
    report = export_model("demo-motion", tmp_path / "cal.xml", quantize="int8", calibrate=clips)
    assert report.parity.top1_agreement >= 0.9
    model = read_ir(tmp_path / "cal.xml")
    assert model.get_rt_info(["nncf", "quantization", "subset_size"]).astype(str) == "3"  # NNCF saw 3 samples
    assert read_ir_card(tmp_path / "cal.xml")[1]["calibration"] == f"3 clips under {clips}"


def test_export_refuses_options_of_the_other_format(tmp_path):
    calls = [
        (dict(out=tmp_path / "x.xml", calibrate=tmp_path), "add --quantize int8"),
        (dict(out=tmp_path / "x.onnx", quantize="int8", calibrate=tmp_path), "--calibrate is for --format openvino"),
        (dict(out=tmp_path / "x.xml", opset=20), "--opset is an ONNX option"),
        (dict(out=tmp_path / "x.onnx", format="openvino"), "an OpenVINO IR is FILE.xml"),
        (dict(out=tmp_path / "x.xml", quantize="int8", calibrate=tmp_path / "none"), "not a folder of video clips"),
        (dict(out=tmp_path / "x.xml", quantize="int8", calibrate=tmp_path), "no video files in it"),
    ]
    for kwargs, message in calls:
        with pytest.raises(UsageError, match=message):
            export_model("demo-motion", **kwargs)
    assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["export", "demo-motion", "--out", str(tmp_path / "x.xml"), "--format", "tflite"])
    assert result.exit_code == 2 and "--format" in result.output


def sample_clips(directory):
    """One sample clip per direction, other seeds than the export check's."""
    return [make_sample_clip(directory / f"{d}.mp4", direction=d, seed=10 + i) for i, d in enumerate(DIRECTIONS)]


@pytest.fixture
def openvino_calls(monkeypatch):
    """How many batches OpenVINO ran (so a test knows the runtime it asked for is the one that answered)."""
    calls = []
    run = OpenVinoModule.run

    def counted(self, feed):
        calls.append(len(feed))
        return run(self, feed)

    monkeypatch.setattr(OpenVinoModule, "run", counted)
    return calls


def test_predict_with_runtime_openvino_gives_the_torch_top_k(tmp_path, openvino_calls):
    clips = sample_clips(tmp_path)
    runs = {}
    for name in ("torch", "openvino"):
        result = runner.invoke(app, ["predict", *map(str, clips), "--model", "demo-motion", "--top-k", "4",
                                     "--runtime", name, "--json"])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
        assert sum(openvino_calls) == (4 if name == "openvino" else 0)  # one view per clip, on OpenVINO
    assert [r["top_k"][0]["label"] for r in runs["torch"]] == list(DIRECTIONS)  # the clips are what they say
    for torch_run, openvino_run in zip(runs["torch"], runs["openvino"], strict=True):
        assert [t["label"] for t in openvino_run["top_k"]] == [t["label"] for t in torch_run["top_k"]]
        assert all(abs(a["score"] - b["score"]) < 1e-4
                   for a, b in zip(openvino_run["top_k"], torch_run["top_k"], strict=True))
        assert openvino_run["gmacs"] == torch_run["gmacs"]


def test_evaluate_and_the_timeline_run_on_openvino(tmp_path, openvino_calls):
    data = tmp_path / "data"
    for i, direction in enumerate(DIRECTIONS):
        (data / direction).mkdir(parents=True)
        make_sample_clip(data / direction / "a.mp4", direction=direction, seed=20 + i)
    summaries = {name: vidcls.evaluate_run("demo-motion", data, runtime=name, workers=0).summary
                 for name in ("torch", "openvino")}
    assert summaries["openvino"].top1 == summaries["torch"].top1 == 1.0
    assert sum(openvino_calls) == 4
    clip = make_sample_clip(tmp_path / "long.mp4", direction="down", frames=48)
    timelines = {name: vidcls.predict_run([clip], "demo-motion", runtime=name, timeline=TimelineOptions(window_s=1.0))
                 .predictions[0].timeline for name in ("torch", "openvino")}
    assert sum(openvino_calls) == 4 + len(timelines["openvino"]["timeline"])  # every window on OpenVINO
    segments = {name: [(s["start_s"], s["end_s"], s["label"]) for s in found["segments"]]
                for name, found in timelines.items()}
    assert segments["openvino"] == segments["torch"] and segments["torch"][0][2] == "down"
    assert [w["top_k"][0]["label"] for w in timelines["openvino"]["timeline"]] == \
        [w["top_k"][0]["label"] for w in timelines["torch"]["timeline"]]


def test_the_conversion_is_cached_and_redone_when_the_weights_change(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "home"))
    conversions = []
    convert = openvino_convert.convert_module

    def counted(module, card, batch="dynamic"):
        conversions.append(card.input.frames)
        return convert(module, card, batch)

    monkeypatch.setattr(openvino_convert, "convert_module", counted)
    ref = model_dir(tmp_path / "m", "joint", zoo_entries()["joint-tiny"]["arch"], seed=0)
    clips = sample_clips(tmp_path)[:2]

    def run(**options):
        return [p.top_k for p in vidcls.predict(clips, str(ref), runtime="openvino", workers=0, **options)]

    first = run()
    assert run() == first and conversions == [8]  # the second run read the cached IR
    cached = sorted(p.name for p in (home() / "openvino").iterdir() if p.name != "compiled")
    assert len(cached) == 1
    run(frames=16)  # another clip shape is another graph
    assert conversions == [8, 16]
    model_dir(tmp_path / "m", "joint", zoo_entries()["joint-tiny"]["arch"], seed=1)  # new weights, same directory
    changed = run()
    assert conversions == [8, 16, 8] and changed != first
    torch_top = [p.top_k for p in vidcls.predict(clips, str(ref), workers=0)]
    assert [[t["label"] for t in top] for top in changed] == [[t["label"] for t in top] for top in torch_top]
    assert len([p for p in (home() / "openvino").iterdir() if p.name != "compiled"]) == 3


def test_the_cached_ir_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A conversion that dies while writing leaves no IR (and no temporary directory) in the cache,
    so the next run converts again instead of reading half an IR."""
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "home"))

    def dies_half_way(model, path, card, facts):
        path.write_text("<net")  # half an IR
        raise KeyboardInterrupt

    monkeypatch.setattr(openvino_convert, "save_ir", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        vidcls.predict([], "demo-motion", runtime="openvino")
    assert [p.name for p in (home() / "openvino").iterdir()] == []


def test_benchmark_puts_torch_and_openvino_side_by_side(demo_ir, tmp_path):
    root, _ = demo_ir
    refs = ["demo-motion", str(root / "fp32.xml"), str(root / "int8")]
    report = vidcls.benchmark(refs, frames=[8], isolate=False, warmup=1, repeats=2)
    assert [p.runtime for p in report.points] == ["torch", "openvino", "openvino-int8"]
    converted = vidcls.benchmark(["demo-motion"], frames=[8], isolate=False, warmup=1, repeats=2, runtime="openvino")
    [point] = converted.points
    assert point.runtime == "openvino" and point.gmacs == report.points[0].gmacs and point.latency_ms > 0


def test_runtime_refusals(demo_ir, tmp_path, some_file):
    root, _ = demo_ir
    assert precision_hint() == "f32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert precision_hint() == "bf16"  # --precision bf16 asks OpenVINO for bf16 (f32 where the CPU lacks it)
    with pytest.raises(UsageError, match="OpenVINO runs on the CPU"):
        OpenVinoModule(root / "fp32.xml", torch.device("cuda"))
    onnx_like = LoadedModel(card=load_model("demo-motion").card, module=RuntimeModule(), weights=None)
    with pytest.raises(UsageError, match="is an exported ONNX graph"):
        vidcls.predict([tmp_path], onnx_like, runtime="openvino")
    result = runner.invoke(app, ["predict", str(tmp_path), "-m", "demo-motion", "--runtime", "tensorrt"])
    assert result.exit_code == 2 and "--runtime" in result.output
    (tmp_path / "lonely.xml").write_text("<net/>")
    result = runner.invoke(app, ["predict", some_file, "-m", str(tmp_path / "lonely.xml")])
    assert result.exit_code == 1 and "needs its weights beside it (lonely.bin)" in result.output


def test_missing_openvino_is_one_line(demo_ir, monkeypatch, tmp_path):
    root, _ = demo_ir
    make_sample_clip(tmp_path / "clip.mp4")
    openvino = sys.modules["openvino"]
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    line = "error: OpenVINO models need the optional package openvino: pip install 'vidcls[openvino]' (openvino, nncf)"
    for args in (["predict", str(tmp_path), "--model", "demo-motion", "--runtime", "openvino"],
                 ["predict", str(tmp_path), "--model", str(root / "fp32.xml")],
                 ["export", "demo-motion", "--out", str(tmp_path / "x.xml")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and result.output.strip().splitlines() == [line], result.output
    assert not (tmp_path / "x.xml").exists()
    monkeypatch.setitem(sys.modules, "openvino", openvino)
    monkeypatch.setitem(sys.modules, "nncf", None)
    result = runner.invoke(app, ["export", "demo-motion", "--out", str(tmp_path / "x.xml"), "--quantize", "int8"])
    assert result.exit_code == 1 and "optional package nncf: pip install 'vidcls[openvino]'" in result.output
