"""Regenerate the README's cost tables (docs/cost.md) and scaling chart (docs/scaling.png).

    python scripts/cost_report.py                      # docs/cost.md + docs/scaling.png
    python scripts/cost_report.py --readme README.md   # also refresh the README's Cost block

Three parts, all through vidcls.bench (the code behind `vidcls benchmark`):

1. GMACs per view of the full-size zoo models at the papers' shapes, next to the papers'
   numbers. Counted on the meta device: exact, instant, no memory.
2. GMACs of the full-size models at 224 x 224 for T = 8..64 and the exponent of GMACs vs T,
   also counted on the meta device.
3. Measured latency and peak memory on this machine for the same families at a "small"
   width (192 wide, 4 layers, 3 heads, 224 x 224, T = 8..64), each point in a fresh
   process: the full-size quadratic models at 64 frames take minutes per forward on a
   laptop-class CPU, while the small ones show the same growth with frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from vidcls.bench import (
    BenchModel,
    BenchReport,
    RunSettings,
    benchmark,
    model_cost,
    resolve_models,
    scaling_exponent,
    write_plot,
)

# (zoo name, extra arch, frames, paper GMACs or None, what the paper row is)
PAPER_SHAPES = [
    ("xvit", {}, 8, 142, "X-ViT ViT-B/16, 8x224"),
    ("xvit-16", {}, 16, 283, "X-ViT ViT-B/16, 16x224"),
    ("divided", {}, 8, 196, "TimeSformer, 8x224"),
    ("joint", {"tubelet_size": 2, "cls_token": False, "pool": "mean", "pos_embed": "sinusoidal"}, 16, 180,
     "VideoMAE ViT-B layout (tubelet 2), 16x224"),
    ("ff-linear-ssv2", {}, 16, 254, "LVT, one fixation gate per attention (count from the authors' code)"),
    ("ff-linear", {}, 16, 265, "LVT, separate q and k gates (count of docs/models.md)"),
    ("linear", {}, 16, None, "LVT backbone without fixation or shifts"),
    ("vidtr-s", {}, 8, 89, "VidTr-S 8x8 (paper's convention unclear)"),
    ("vidtr-m", {}, 16, 179, "VidTr-M 16x4"),
    ("vidtr-l", {}, 32, 351, "VidTr-L 32x2"),
    ("c-vidtr-s", {}, 8, 39, "C-VidTr-S 8x8"),
    ("c-vidtr-m", {}, 16, 59, "C-VidTr-M 16x4"),
]
SCALING_MODELS = ["joint", "divided", "xvit", "vidtr-s", "ff-linear", "linear"]
SMALL = {"embed_dim": 192, "depth": 4, "num_heads": 3}
MARKERS = ("<!-- cost-report:start -->", "<!-- cost-report:end -->")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A GitHub markdown table: the first `text_columns` left-aligned, the numbers right-aligned."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def with_arch(model: BenchModel, **arch) -> BenchModel:
    return dataclasses.replace(model, arch={**model.arch, **arch})


def paper_table() -> str:
    rows = []
    for name, arch, frames, paper, what in PAPER_SHAPES:
        model = with_arch(resolve_models([name])[0], **arch)
        gmacs = model_cost(model, frames, 224).flops.gmacs
        diff = "" if paper is None else f"{100 * (gmacs / paper - 1):+.1f}%"
        rows.append([f"`{name}`", what, f"{frames}x224", f"{gmacs:.1f} x {model.views}",
                     "-" if paper is None else paper, diff])
    return table(["model", "paper row", "T x size", "ours, GMACs/view x views", "paper", "difference"], rows, 2)


def full_size_scaling(frames: Sequence[int]) -> str:
    rows = []
    for model in resolve_models(SCALING_MODELS):
        costs = [model_cost(model, t, 224).flops for t in frames]
        gmacs = [c.gmacs for c in costs]
        vs_linear = gmacs[-1] / (gmacs[0] * frames[-1] / frames[0])
        rows.append([f"`{model.name}`", *(f"{g:.0f}" for g in gmacs), f"{scaling_exponent(frames, gmacs):.2f}",
                     f"{vs_linear:.2f}x", f"{100 * costs[-1].attention_share:.0f}%"])
    header = ["model", *(f"T={t}" for t in frames), "exponent", f"T={frames[-1]} vs linear from T={frames[0]}",
              f"attention share at T={frames[-1]}"]
    return table(header, rows)


def small_models() -> list[BenchModel]:
    models = []
    for model in resolve_models(SCALING_MODELS):
        extra = {"mlp_hidden": 4 * SMALL["embed_dim"]} if "mlp_hidden" in model.arch else {}
        models.append(dataclasses.replace(with_arch(model, **SMALL, **extra), name=f"{model.name}-small"))
    return models


def measured_table(report: BenchReport) -> str:
    rows = []
    for p in report.points:
        measured = [p.error or "-"] * 4 if p.latency_ms is None else [
            f"{p.peak_memory_mib:.0f}", f"{p.latency_ms:.0f}", f"{p.latency_min_ms:.0f}-{p.latency_max_ms:.0f}",
            f"{p.cpu_time_ms:.0f}"]
        rows.append([f"`{p.model}`", p.frames, f"{p.gmacs:.1f}", f"{100 * p.attention_share:.0f}%", *measured,
                     "-" if p.mfu is None else f"{100 * p.mfu:.0f}%"])
    return table(["model", "T", "GMACs", "attention", "peak MiB", "latency ms", "min-max ms", "CPU ms", "MFU"],
                 rows)


def exponent_table(report: BenchReport) -> str:
    rows = []
    for name in report.models():
        rows.append([f"`{name}`", *("-" if e is None else f"{e:.2f}" for e in report.exponents(name).values())])
    return table(["model", "GMACs", "peak memory", "latency", "CPU time"], rows)


def render(frames: Sequence[int], report: BenchReport, settings: RunSettings, plot_name: str) -> str:
    threads = settings.threads or torch.get_num_threads()
    machine = f"{platform.machine()} CPU, {threads} thread(s), torch {torch.__version__}"
    return f"""Generated by `python scripts/cost_report.py`; do not edit by hand.
GMACs are multiply-accumulates of one view (the papers' "GFLOPs"; FLOPs = 2 x GMACs),
counted with torch's FlopCounterMode, attention included.

**GMACs per view at the papers' shapes** (full-size models):

{paper_table()}

**Full-size models at 224 x 224: GMACs per view against frames** (exponent = slope of
log GMACs vs log T; 1 is linear growth):

{full_size_scaling(frames)}

**Measured on this machine** ({machine}; matmul rate {report.matmul_gflops_per_s:.0f} GFLOP/s fp32):
the same families at a small width ({SMALL['embed_dim']} wide, {SMALL['depth']} layers,
{SMALL['num_heads']} heads) at 224 x 224, batch 1, fp32, median of {settings.repeats} runs after
{settings.warmup} warm-up, each point in a fresh process. Peak memory is what the forward
pass allocates above the weights and input.

{measured_table(report)}

Exponent of cost vs frames (small models, measured):

{exponent_table(report)}

![GMACs, peak memory and latency against frames]({plot_name})
"""


def replace_block(readme: Path, body: str) -> None:
    """Put `body` between the cost-report markers of the README (which must already be there)."""
    text = readme.read_text()
    start, end = MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} block to fill")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{body}\n{end}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where cost.md and scaling.png go")
    parser.add_argument("--frames", default="8,16,32,64")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per measurement (1: steady numbers on a shared machine; 0: torch's default)")
    parser.add_argument("--readme", type=Path, help="also fill this README's cost-report block")
    args = parser.parse_args()
    frames = [int(t) for t in args.frames.split(",")]
    settings = RunSettings(device="cpu", warmup=args.warmup, repeats=args.repeats, threads=args.threads or None)
    report = benchmark(small_models(), frames, 224, settings,
                       on_point=lambda p: print(f"{p.model} T={p.frames}: {p.latency_ms} ms, "
                                                f"{p.peak_memory_mib} MiB {p.error or ''}", flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    title = "cost vs frames: small-width models at 224x224 (GMACs per view, measured memory and latency)"
    plot = write_plot(report, args.out / "scaling.png", title=title)
    body = render(frames, report, settings, plot.name)
    tmp = args.out / ".cost.md.tmp"
    tmp.write_text(body)
    os.replace(tmp, args.out / "cost.md")  # never a half-written table
    print(f"wrote {args.out / 'cost.md'} and {plot}")
    if args.readme:
        replace_block(args.readme, body.replace(f"]({plot.name})", f"]({plot.as_posix()})"))


if __name__ == "__main__":
    main()
