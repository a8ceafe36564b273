"""The cost report: FLOP counts against hand formulas and the papers, memory, scaling, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from vidcls.bench import flops, measurement, sweep
from vidcls.bench.flops import UncountedAttentionError, count_macs, sdpa_macs
from vidcls.bench.measurement import Measurement, RunSettings, measure, measure_isolated
from vidcls.bench.memory import PeakMemory, proc_status_kib
from vidcls.bench.models import BenchModel, model_cost, resolve_models
from vidcls.bench.roofline import precision_warning
from vidcls.bench.sweep import BenchPoint, BenchReport, benchmark, scaling_exponent
from vidcls.cli import app
from vidcls.errors import UsageError
from vidcls.models import build_model
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir

runner = CliRunner()
# `benchmark --json` fields: those cli.md documents, then vidcls's extras. Written out, not read
# from BenchPoint, so a field renamed or dropped there fails the JSON test.
CLI_MD_FIELDS = ["model", "frames", "size", "batch_size", "device", "precision", "params", "gmacs", "gflops",
                 "peak_memory_mib", "latency_ms", "clips_per_s"]
EXTRA_FIELDS = ["trainable_params", "views", "attention_share", "latency_min_ms", "latency_max_ms", "cpu_time_ms",
                "achieved_gflops_per_s", "matmul_gflops_per_s", "mfu", "compiled", "error", "runtime",
                "precision_reason", "noisy"]
TINY_JOINT = dict(num_classes=5, num_frames=8, img_size=32, patch_size=8, tubelet_size=2, embed_dim=32,
                  depth=2, num_heads=2, mlp_ratio=4.0)


def cost_by_hand(c: dict) -> tuple[int, int]:
    """(total, attention) multiply-accumulates of a joint ViT with a CLS token, written out."""
    dim, hidden = c["embed_dim"], int(c["embed_dim"] * c["mlp_ratio"])
    patches = (c["num_frames"] // c["tubelet_size"]) * (c["img_size"] // c["patch_size"]) ** 2
    tokens = patches + 1
    patch_embed = patches * dim * 3 * c["tubelet_size"] * c["patch_size"] ** 2
    projections = tokens * dim * 3 * dim + tokens * dim * dim  # qkv, then the output projection
    attention = tokens * tokens * dim + tokens * tokens * dim  # q k^T over all heads, then attn v
    mlp = 2 * tokens * dim * hidden
    per_block = projections + attention + mlp
    return patch_embed + c["depth"] * per_block + dim * c["num_classes"], c["depth"] * attention


def save_tiny(directory: Path, arch: dict, crops: int = 1) -> Path:
    """A model directory of the tiny joint ViT `arch`, input recipe 8 x 32 x 32, random weights."""
    card = ModelCard(name="tiny", family="joint", arch=arch, labels=[f"c{i}" for i in range(arch["num_classes"])],
                     input=InputSpec(frames=8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3, crops=crops))
    return save_model_dir(directory, card, build_model("joint", arch))


def bench_point(model: str, frames: int, gmacs: float, memory: float | None = None,
                latency: float | None = None) -> BenchPoint:
    """A report row with the given costs (the rest filled in), for tests that need no measurement."""
    return BenchPoint(model=model, frames=frames, size=32, batch_size=1, device="cpu", precision="fp32",
                      params=1, trainable_params=1, gmacs=gmacs, gflops=2 * gmacs, views=1,
                      attention_share=0.0, peak_memory_mib=memory, latency_ms=latency, latency_min_ms=latency,
                      latency_max_ms=latency, cpu_time_ms=latency, clips_per_s=None, achieved_gflops_per_s=None,
                      matmul_gflops_per_s=1.0, mfu=None, compiled=False)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_flop_count_equals_hand_formula_with_attention(device):
    with torch.device(device):
        model = build_model("joint", TINY_JOINT).eval()
        count = count_macs(model, torch.zeros(1, 3, 8, 32, 32))
    total, attention = cost_by_hand(TINY_JOINT)
    assert count.macs == total
    assert count.attention_macs == attention
    if device == "cpu":  # the CPU SDPA kernel torch itself counts as 0
        assert count.by_op["aten._scaled_dot_product_flash_attention_for_cpu"] == attention


def test_sdpa_counted_for_any_leading_axes():
    class Attend(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    q5 = torch.randn(2, 3, 4, 10, 8)  # (B, T, H, N, d): CPU takes SDPA's math path
    q4 = q5.flatten(0, 1)  # (B*T, H, N, d): CPU takes the fused kernel
    expected = 2 * 3 * 4 * 10 * 10 * (8 + 8)
    assert count_macs(Attend(), q5).macs == count_macs(Attend(), q4).macs == expected
    assert sdpa_macs((2, 3, 4, 10, 8), (4, 7, 8), (4, 7, 6)) == 2 * 3 * 4 * 10 * 7 * 14


def test_attention_counted_as_zero_fails_loudly(monkeypatch):
    monkeypatch.setattr(flops, "ATTENTION_FORMULAS", {})
    model = build_model("joint", TINY_JOINT).eval()
    with pytest.raises(UncountedAttentionError, match="flash_attention_for_cpu"):
        count_macs(model, torch.zeros(1, 3, 8, 32, 32))


def test_linear_attention_cost_is_linear_in_frames():
    model = resolve_models(["linear-tiny"])[0]
    short, long = (model_cost(model, t, 32).flops for t in (4, 8))
    assert long.attention_macs == 2 * short.attention_macs
    assert long.macs <= 2 * short.macs  # only the head stays constant
    cfg = model.arch_at(4, 32)
    heads, d = cfg["num_heads"], cfg["embed_dim"] // cfg["num_heads"]
    grid_h, grid_w = model.build(4, 32).token_grid(32, 32)
    tokens = 4 * grid_h * grid_w
    # temporal and spatial attention in every layer: k^T v and q (k^T v), 2 d^2 per token and head
    assert short.attention_macs >= cfg["depth"] * 2 * tokens * heads * 2 * d * d > 0


def test_models_are_resolved_without_their_weights(tmp_path):
    model_dir = save_tiny(tmp_path / "tiny", TINY_JOINT)
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")  # pickle-only: loading refuses it
    [model] = resolve_models([str(model_dir)])
    assert (model.name, model.family, model.arch, model.frames, model.size) == ("tiny", "joint", TINY_JOINT, 8, 32)


def test_scaling_exponent():
    frames = [8, 16, 32, 64]
    assert scaling_exponent(frames, [3 * t**1.5 for t in frames]) == pytest.approx(1.5)
    assert scaling_exponent([8], [1.0]) is None


def paper_shape(name: str, **arch) -> BenchModel:
    base = resolve_models([name])[0]
    return BenchModel(base.name, base.family, {**base.arch, **arch}, base.frames, base.size)


@pytest.mark.parametrize("model, frames, paper", [
    (paper_shape("xvit"), 8, 142), (paper_shape("xvit"), 16, 283), (paper_shape("divided"), 8, 196),
    (paper_shape("joint", tubelet_size=2, cls_token=False, pool="mean", pos_embed="sinusoidal"), 16, 180),
    (paper_shape("ff-linear-ssv2"), 16, 254),  # one gate per attention, as the 254 counted from the code
    (paper_shape("ff-linear"), 16, 265),  # a q gate and a k gate: the spec's count
])
def test_gmacs_at_the_papers_shapes(model, frames, paper):
    assert model_cost(model, frames, 224).flops.gmacs == pytest.approx(paper, rel=0.03)


def test_full_size_scaling_linear_vs_joint():
    """Counted on the meta device at 224 x 224, T = 8 and 64 (scripts/cost_report.py does 8..64)."""
    frames = [8, 64]
    models = resolve_models(["ff-linear", "joint"])
    gmacs = {m.name: [model_cost(m, t, 224).flops.gmacs for t in frames] for m in models}
    assert scaling_exponent(frames, gmacs["ff-linear"]) <= 1.05
    assert gmacs["joint"][1] >= 1.5 * 8 * gmacs["joint"][0]


def test_peak_memory_is_not_fooled_by_freed_heap_memory():
    if not proc_status_kib("VmHWM"):
        pytest.skip("needs Linux /proc")
    freed = [torch.ones(64, 128) for _ in range(2048)]  # 64 MiB in 32 KiB heap blocks...
    del freed  # ...that malloc keeps for reuse
    with PeakMemory(torch.device("cpu")) as peak:
        again = [torch.ones(64, 128) for _ in range(1024)]  # 32 MiB that could reuse them unseen
    del again
    assert 30 < peak.mib < 40


def test_isolated_measurement_and_out_of_memory():
    model = resolve_models(["joint-tiny"])[0]
    settings = RunSettings(warmup=0, repeats=2, threads=1)
    fresh = measure_isolated(model, 4, 32, settings)
    assert len(fresh.latencies_ms) == len(fresh.cpu_times_ms) == 2
    assert fresh.peak_memory_mib > 0 and fresh.error is None
    too_big = measure_isolated(model, 64, 224, settings, memory_limit_mib=40)
    assert too_big == Measurement(error="out of memory at T=64")


def test_sweep_goes_on_after_out_of_memory(monkeypatch):
    def fake(model, frames, size, settings):
        return Measurement(error="out of memory at T=8") if frames == 8 else Measurement([2.0], [2.0], 1.0)

    monkeypatch.setattr(sweep, "measure_isolated", fake)
    monkeypatch.setattr(sweep, "matmul_rate", lambda device, dtype: 100.0)
    report = benchmark(resolve_models(["joint-tiny"]), [4, 8, 16], settings=RunSettings(warmup=0, repeats=1),
                       isolate=True)
    assert [p.frames for p in report.points] == [4, 8, 16]
    assert report.points[1].error == "out of memory at T=8" and report.points[1].latency_ms is None
    assert report.points[1].gmacs > 0  # counted even where it could not run
    assert report.points[2].latency_ms == 2.0 and report.points[2].error is None


def test_precision_warning_names_the_reason():
    cpu = torch.device("cpu")
    message = precision_warning(cpu, "bf16", rate=0.3, fp32_rate=137.0)
    assert "bf16" in message and "457x slower" in message and "fp32" in message
    assert precision_warning(cpu, "bf16", rate=400.0, fp32_rate=137.0) is None
    assert precision_warning(torch.device("cpu"), "fp32", rate=137.0, fp32_rate=137.0) is None


def test_benchmark_json_matches_cli_md(tmp_path):
    """Each value against something outside vidcls.bench: the hand formula, a plain parameter sum,
    the field list above, and the definitions of the derived rates."""
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["benchmark", "--model", str(save_tiny(tmp_path / "tiny", TINY_JOINT)),
                                 "--frames", "4,8", "--repeats", "2", "--warmup", "1", "--in-process",
                                 "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # --threads 1 applied to the measurement only
    rows = json.loads(result.stdout)
    assert [(r["model"], r["frames"]) for r in rows] == [("tiny", 4), ("tiny", 8)]
    for row in rows:
        arch = {**TINY_JOINT, "num_frames": row["frames"]}  # the position table is sized for the frames
        macs, attention = cost_by_hand(arch)
        assert set(row) == {*CLI_MD_FIELDS, *EXTRA_FIELDS} and row["error"] is None
        settings = (row["size"], row["batch_size"], row["device"], row["precision"], row["views"])
        assert settings == (32, 1, "cpu", "fp32", 1)
        assert row["gmacs"] == pytest.approx(macs / 1e9, rel=1e-5)
        assert row["gflops"] == pytest.approx(2 * macs / 1e9, rel=1e-5)
        assert row["attention_share"] == pytest.approx(attention / macs, rel=1e-5)
        params = sum(p.numel() for p in build_model("joint", arch).parameters())
        assert row["params"] == row["trainable_params"] == params
        assert row["peak_memory_mib"] > 0
        assert row["clips_per_s"] == pytest.approx(1e3 / row["latency_ms"], rel=1e-3)
        assert row["latency_min_ms"] <= row["latency_ms"] <= row["latency_max_ms"] and row["cpu_time_ms"] > 0
        achieved = 2 * row["gmacs"] * row["clips_per_s"]
        assert row["achieved_gflops_per_s"] == pytest.approx(achieved, rel=0.01)
        assert row["mfu"] == pytest.approx(achieved / row["matmul_gflops_per_s"], rel=0.01)


def test_benchmark_plot_csv_and_tables(monkeypatch, tmp_path):
    """The CLI's outputs of a report (the sweep itself is tested above): tables, chart, CSV."""
    image = pytest.importorskip("matplotlib.image")
    report = BenchReport([bench_point(name, t, gmacs=t**k, memory=10.0 * t, latency=5.0 * t**k)
                          for name, k in (("quadratic", 2), ("linear", 1)) for t in (4, 8)], 100.0)
    monkeypatch.setattr(sweep, "benchmark", lambda *args, **kwargs: report)
    png, table = tmp_path / "scaling.png", tmp_path / "points.csv"
    result = runner.invoke(app, ["benchmark", "--model", "joint-tiny,linear-tiny", "--frames", "4,8",
                                 "--plot", str(png), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    scaling = [line.split() for line in result.stdout[result.stdout.index("exponent"):].splitlines()]
    assert ["quadratic", "2.00", "1.00", "2.00", "2.00"] in scaling  # GMACs, memory, latency, CPU time
    assert ["linear", "1.00", "1.00", "1.00", "1.00"] in scaling
    assert png.stat().st_size > 10_000
    assert image.imread(png).shape[:2] == (420, 1300)
    lines = table.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("model,frames,size") and lines[1].startswith("quadratic,4,32")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["points.csv", "scaling.png"]  # no temporary left


def test_size_not_a_multiple_of_the_patch_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(sweep, "matmul_rate", lambda *args: pytest.fail("measured before checking every shape"))
    result = runner.invoke(app, ["benchmark", "--model", "linear-tiny,joint-tiny", "--frames", "4", "--size", "60"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: joint-tiny: size 60 is not a multiple of its patch size 8; nearest valid size: 56 or 64"]


def test_shape_check_of_each_patch_embedding():
    joint, linear = resolve_models(["joint-tiny", "linear-tiny"])
    with pytest.raises(UsageError, match="frame count 3 is not a multiple of its tubelet size 2; "
                                         "nearest valid frame count: 2 or 4$"):
        joint.check_shape(3, 32)
    with pytest.raises(UsageError, match="size 4 is not a multiple of its patch size 8; nearest valid size: 8$"):
        model_cost(joint, 4, 4)  # building checks too, for callers of the library
    linear.check_shape(3, 60)  # a convolution patch embedding takes any size
    assert model_cost(linear, 3, 60).flops.macs > 0


def test_predict_cost_line_loads_neither_the_sweep_nor_measurement():
    """predict imports its cost line from vidcls.bench: that must not import the benchmark's
    sweep, its per-point subprocesses or the matmul-rate code, and the package alone imports nothing."""
    code = ("import json, sys\n"
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith('vidcls.bench'))\n"
            "import vidcls.bench\n"
            "package = loaded()\n"
            "from vidcls.bench import PeakMemory, cost_line, run_cost\n"
            "from vidcls.api import predict_run\n"  # what `vidcls predict` calls
            "print(json.dumps([package, loaded()]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    package, predict = json.loads(proc.stdout)
    assert package == ["vidcls.bench"]
    assert predict == ["vidcls.bench", "vidcls.bench.cost", "vidcls.bench.flops", "vidcls.bench.memory",
                       "vidcls.bench.models"]


def test_benchmark_bad_arguments_are_one_line_errors():
    for args, needle in ((["--model", "joint-tiny", "--frames", "8,x"], "--frames"),
                         (["--model", "no-such-model"], "unknown model"),
                         (["--model", "joint-tiny", "--precision", "fp8"], "precision")):
        result = runner.invoke(app, ["benchmark", *args])
        assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_report_exponents_skip_missing_points():
    report = BenchReport([bench_point("m", 8, 1.0, 10.0), bench_point("m", 16, 4.0, 20.0),
                          bench_point("m", 32, 16.0, None)], 1.0)
    assert report.exponents("m") == {"gmacs": pytest.approx(2.0), "peak_memory_mib": pytest.approx(1.0),
                                     "latency_ms": None, "cpu_time_ms": None}


def test_predict_reports_the_runs_cost(tmp_path):
    model_dir = save_tiny(tmp_path / "tiny", TINY_JOINT, crops=3)
    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=16, height=48, width=64, seed=0)
    result = runner.invoke(app, ["predict", str(clip), "--model", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["gmacs"] == pytest.approx(cost_by_hand(TINY_JOINT)[0] / 1e9, rel=1e-5)
    assert row["views"] == 3 and row["peak_memory_mib"] >= 0
    assert set(row["timing_ms"]) == {"decode", "preprocess", "model"}
    table = runner.invoke(app, ["predict", str(clip), "--model", str(model_dir), "--clips", "2"])
    assert table.exit_code == 0 and "GMACs per view x 6 views" in table.stdout


def test_plot_without_matplotlib_fails_before_the_sweep(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a missing package looks like to import
    monkeypatch.setattr(sweep, "benchmark", lambda *a, **k: pytest.fail("the sweep ran"))
    result = runner.invoke(app, ["benchmark", "--model", "joint-tiny", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "pip install matplotlib" in result.output


def test_threads_setting_covers_the_timed_passes(monkeypatch):
    timed, real = [], measurement.wall_and_cpu_ms
    monkeypatch.setattr(measurement, "wall_and_cpu_ms", lambda step, device: (timed.append(torch.get_num_threads()),
                                                                          real(step, device))[1])
    before = torch.get_num_threads()
    measure(resolve_models(["joint-tiny"])[0], 4, 32, RunSettings(warmup=0, repeats=2, threads=1))
    assert timed == [1, 1] and torch.get_num_threads() == before


def test_a_point_whose_repeats_spread_is_flagged_and_left_out_of_the_exponent(monkeypatch):
    """A busy machine once gave one point 0.99-18.99 ms and a latency exponent of -1.00: a point whose
    slowest repeat takes over 2x its fastest is warned about, marked noisy and left out of the time
    exponents, and the report names the machine and its fp32 and bf16 matmul rates."""
    from vidcls.bench.measurement import Measurement
    from vidcls.bench.models import resolve_models

    spreads = {4: [1.0, 1.1], 8: [0.99, 18.99], 16: [4.0, 4.2]}

    def fake(model, frames, size, settings):
        return Measurement(spreads[frames], spreads[frames], 1.0)

    monkeypatch.setattr(sweep, "measure_isolated", fake)
    monkeypatch.setattr(sweep, "matmul_rate", lambda device, dtype: {torch.float32: 150.0}.get(dtype, 3.0))
    found = []
    report = sweep.benchmark(resolve_models(["joint-tiny"]), [4, 8, 16], on_warning=found.append)
    assert [p.noisy for p in report.points] == [False, True, False]
    assert any("T=8" in w and "busy" in w for w in found)
    frames, _ = report.series("joint-tiny", "latency_ms")
    assert frames == [4, 16] and report.exponents("joint-tiny")["latency_ms"] == pytest.approx(1.0, abs=0.05)
    assert report.rates == {"fp32": 150.0, "bf16": 3.0}
    assert "fp32 150 GFLOP/s" in report.machine_line() and "bf16 3 GFLOP/s" in report.machine_line()


def full_point(model: str, frames: int) -> BenchPoint:
    """A full-size point with every field filled (ViT-B numbers: five-digit latencies, percentages)."""
    return BenchPoint(model=model, frames=frames, size=224, batch_size=1, device="cpu", precision="fp32",
                      params=121_260_000, trainable_params=1, gmacs=785.9, gflops=1571.8, views=30,
                      attention_share=0.123, peak_memory_mib=1448.0, latency_ms=14820.0, latency_min_ms=13340.0,
                      latency_max_ms=17780.0, cpu_time_ms=28160.0, clips_per_s=0.0675, achieved_gflops_per_s=106.1,
                      matmul_gflops_per_s=150.0, mfu=0.7071, compiled=False)


def test_benchmark_table_fits_80_columns_and_wide_has_every_column(monkeypatch):
    """At 80 columns on a terminal every name and number is whole (a model directory keeps its name,
    cut in the middle); --wide adds the other columns; in a pipe the table is plain text, nothing cut."""
    from rich.console import Console

    import vidcls.cli.bench as cli_bench
    from vidcls import api

    models = ["timesformer-k400", "c-vidtr-m-k400", "/home/someone/experiments/runs/videomae-k400/best"]
    report = BenchReport([full_point(name, t) for name in models for t in (8, 32)], 150.3)
    monkeypatch.setattr(api, "benchmark", lambda *args, **kwargs: report)  # a model directory resolves nowhere
    args = ["benchmark", "--model", ",".join(models), "--frames", "8,32"]
    monkeypatch.setattr(cli_bench, "out", Console(width=80, force_terminal=True, color_system=None))
    lines = runner.invoke(app, args).stdout.splitlines()
    assert max(map(len, lines)) <= 80
    rows = [line.split() for line in lines]
    for name in models[:2]:
        assert [name, "32", "224", "121.26", "785.9", "x30", "1448", "1.482e+04", "70.7%"] in rows
    cut = [row for row in rows if row and row[0].endswith("…/best")]
    assert len(cut) == 3 and all(models[2].startswith(row[0].split("…")[0]) for row in cut)  # points, exponents
    wide = runner.invoke(app, [*args, "--wide"]).stdout.splitlines()
    assert [models[0], "8", "224", "121.26", "785.9", "x30", "12", "1448", "1.482e+04", "1.334e+04-1.778e+04",
            "2.816e+04", "0.0675", "70.7%"] in [line.split() for line in wide]
    monkeypatch.setattr(cli_bench, "out", Console(width=80))  # not a terminal: a pipe or a file
    piped = runner.invoke(app, args).stdout
    assert not set("│┃━─…") & set(piped)
    assert [models[2], "8", "224", "121.26", "785.9", "x30", "1448", "1.482e+04", "70.7%"] in \
        [line.split() for line in piped.splitlines()]
