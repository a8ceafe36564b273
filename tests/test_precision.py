"""--precision auto: bf16 where the device runs it natively, fp32 elsewhere; bf16 with the weights cast
once. The detection is tested by faking what the CPU (or GPU) reports; agreement with fp32 on real
weights (demo-motion's clips) and on every family's random weights."""

from __future__ import annotations

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
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
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
    """Every family, random tiny weights: the weights cast once to bf16 change the logits by at most 2%
    (relative, over the batch; bf16 rounds to 8 bits of mantissa, 0.4% a step, and a tiny random model's
    logits are small); a plain fp32 forward is the reference. Full size (target 1%): scripts/precision_check.py."""
    torch.manual_seed(0)
    module = build(case).eval()
    family, arch = CASES[case]
    clip = torch.randn(2, 3, arch["num_frames"], arch["img_size"], arch["img_size"])
    with torch.inference_mode():
        exact = module(clip)
        fast = devices.cast_module(module, "bf16")(clip.to(torch.bfloat16)).float()
    assert ((fast - exact).norm() / exact.norm()).item() <= 0.02
