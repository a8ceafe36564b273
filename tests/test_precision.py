"""--precision auto: bf16 where the device runs it natively, fp32 elsewhere; bf16 with the weights cast
once. The detection is tested by faking what the CPU (or GPU) reports; agreement with fp32 on real
weights (demo-motion's clips) and on every family's random weights."""

from __future__ import annotations

import copy

import pytest
import torch

import vidcls
from test_model_interface import CASES, build
from vidcls import devices
from vidcls.choices import DIRECTIONS
from vidcls.video.synthetic import make_sample_clip

CPU = torch.device("cpu")


@pytest.fixture
def cpu_reports(monkeypatch):
    """Make the CPU report the given flags (what /proc/cpuinfo lists)."""
    def report(*flags: str) -> None:
        monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    return report


@pytest.mark.parametrize(("flags", "chosen", "named"), [
    (("avx2", "amx_bf16", "amx_tile"), "bf16", "AMX"),
    (("avx2", "avx512f", "avx512_bf16"), "bf16", "AVX512-BF16"),
    (("avx2", "avx512f"), "fp32", "without AMX or AVX512-BF16"),
    ((), "fp32", "without AMX or AVX512-BF16"),
])
def test_auto_reads_the_cpu(cpu_reports, flags, chosen, named):
    cpu_reports(*flags)
    choice = devices.choose_precision("auto", CPU)
    assert choice.precision == chosen and named in choice.reason and choice.reason.startswith("auto: ")


@pytest.mark.parametrize(("capability", "chosen"), [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_reads_the_gpu(monkeypatch, capability, chosen):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    choice = devices.choose_precision("auto", torch.device("cuda", 0))
    assert choice.precision == chosen and f"{capability[0]}.{capability[1]}" in choice.reason


def test_named_precisions_and_exported_graphs(cpu_reports):
    cpu_reports("amx_bf16")
    assert devices.choose_precision("fp32", CPU) == devices.PrecisionChoice("fp32", "asked for")
    assert devices.choose_precision("fp16", CPU).precision == "fp16"
    assert devices.choose_precision("auto", CPU, exported=True).precision == "fp32"


def test_cast_once_leaves_the_loaded_model_alone():
    model = vidcls.load_model("demo-motion")
    cast = model.at_precision("bf16")
    assert model.at_precision("bf16") is cast  # kept for the next run
    matmuls = {name for name, layer in cast.named_modules() if isinstance(layer, devices.MATMUL_LAYERS)} - {"head"}
    assert {p.dtype for name, p in cast.named_parameters() if name.rpartition(".")[0] in matmuls} == {torch.bfloat16}
    assert {p.dtype for name, p in cast.named_parameters()
            if name.rpartition(".")[0] not in matmuls} == {torch.float32}  # norms, embeddings, the head
    assert {p.dtype for p in model.module.parameters()} == {torch.float32}
    assert model.at_precision("fp32") is model.module


@pytest.fixture(scope="module")
def sample_clips(tmp_path_factory):
    """Two unseen clips per direction, as the ONNX int8 gate uses."""
    folder = tmp_path_factory.mktemp("precision")
    return [make_sample_clip(folder / f"{d}-{seed}.mp4", d, frames=24, seed=seed)
            for d in DIRECTIONS for seed in (11, 12)]


def test_auto_runs_bf16_where_native_and_keeps_demo_motions_labels(cpu_reports, sample_clips):
    """With AMX reported, auto runs bf16 (said in the cost and the JSON) and every top-1 is fp32's."""
    model = vidcls.load_model("demo-motion")
    exact = vidcls.predict_run(sample_clips, model, precision="fp32", workers=0)
    cpu_reports("amx_bf16")
    fast = vidcls.predict_run(sample_clips, model, workers=0)
    assert fast.cost.precision == "bf16" and "AMX" in fast.cost.precision_reason
    assert exact.cost.precision == "fp32" and exact.cost.precision_reason == "asked for"
    assert fast.to_json()[0]["precision"] == "bf16"
    assert [p.top_k[0]["label"] for p in fast.predictions] == [p.top_k[0]["label"] for p in exact.predictions]
    assert [p.top_k[0]["label"] for p in exact.predictions] == [c.name.split("-")[0] for c in sample_clips]
    for a, b in zip(fast.predictions, exact.predictions, strict=True):
        assert a.top_k[0]["score"] == pytest.approx(b.top_k[0]["score"], abs=0.02)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_logits_within_one_percent_of_fp32(case):
    """Every family, random tiny weights: the weights cast once to bf16 change the logits by at most 1%
    (relative, over the batch; bf16 rounds to 8 bits of mantissa, 0.4% a step), as at full size
    (scripts/precision_check.py); a plain fp32 forward is the reference. The residual stream stays fp32:
    the tokens entering the blocks and the features the head reads are fp32, the logits too."""
    torch.manual_seed(0)
    module = build(case).eval()
    family, arch = CASES[case]
    clip = torch.randn(2, 3, arch["num_frames"], arch["img_size"], arch["img_size"])
    cast = devices.cast_module(module, "bf16")
    with torch.inference_mode():
        exact = module(clip)
        features = cast.forward_features(clip.to(torch.bfloat16))
        fast = cast.forward_head(features)
    assert features.dtype == torch.float32 and fast.dtype == torch.float32
    assert ((fast - exact).norm() / exact.norm()).item() <= 0.01


def test_the_whole_module_in_bf16_is_what_the_fp32_stream_avoids():
    """The joint family at a width where it shows: everything in bf16 (the residual stream rounded at every
    addition) moves the logits further from fp32 than cast_module's bf16 matmuls with an fp32 stream."""
    from vidcls.models import build_model

    torch.manual_seed(0)
    module = build_model("joint", {"num_classes": 10, "num_frames": 4, "img_size": 32, "patch_size": 8,
                                   "embed_dim": 192, "depth": 6, "num_heads": 3}).eval()
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        exact = module(clip)
        error = {name: ((fast(clip.to(torch.bfloat16)).float() - exact).norm() / exact.norm()).item()
                 for name, fast in (("whole", copy.deepcopy(module).to(torch.bfloat16)),
                                    ("matmuls", devices.cast_module(module, "bf16")))}
    assert error["matmuls"] < error["whole"], error
