"""Long-context single pass: how many frames each attention family takes in one forward at 224 px.

    python scripts/long_context.py                 # prints the README's markdown table
    python scripts/long_context.py --json out.json # also keeps every measured number

Issue 13, item 4: ff-linear's cost grows linearly with frames, so it can look at minutes of
video in one forward pass. Three measurements, all through vidcls.bench (the code behind
`vidcls benchmark`), each point in a fresh process capped at the memory budget:

1. GMACs per view of the full-size models at N = 64, 128, 256 frames, counted exactly on the
   meta device (no time, no memory).
2. Latency and peak memory at N = 64, 128, 256 at a TINY width (64 wide, 2 layers, 2 heads;
   the full-size token grid at 224 px): the full-size quadratic models take minutes to hours
   per forward at these lengths on a 2-core CPU, the tiny ones show the same growth.
3. The largest N whose forward fits in the budget (default 8 GiB) at FULL width: inference
   frees each block's activations before the next, so the peak of one block is the peak of
   twelve; each family is measured with depth 1 at N = 64, 128, 256, its peak memory fitted
   as a + b N (plus the full model's weights and the input clip), and solved for the budget.
   `--search MODEL` then finds the largest N that really runs at depth 1 under the budget
   (for models whose time grows linearly: joint at those N takes hours per forward).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from vidcls.bench import BenchModel, RunSettings, measure_isolated, model_cost, resolve_models
from vidcls.fileio import write_text_atomic

MODELS = ("ff-linear", "joint", "divided", "xvit")
LATENCY_FRAMES = (64, 128, 256)
MEMORY_FRAMES = (64, 128, 256)
SIZE = 224
TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}
MIB = float(1 << 20)


def with_arch(model: BenchModel, suffix: str, **arch) -> BenchModel:
    """`model` with some hyper-parameters replaced, renamed."""
    if "mlp_hidden" in model.arch and "embed_dim" in arch:  # ff-linear sizes its MLP in units, not a ratio
        arch = {"mlp_hidden": 4 * arch["embed_dim"], **arch}
    return dataclasses.replace(model, name=f"{model.name}{suffix}", arch={**model.arch, **arch})


def tubelet(model: BenchModel) -> int:
    return int(model.arch.get("tubelet_size", 1))


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def input_mib(frames: int) -> float:
    return 4 * 3 * frames * SIZE * SIZE / MIB


def largest_frames(model: BenchModel, settings: RunSettings, budget_mib: float) -> dict:
    """Peak memory of one full-width block at MEMORY_FRAMES, and the N it predicts for the budget."""
    one_block = with_arch(model, "-depth1", depth=1)
    weights_mib = 4 * model_cost(model, MEMORY_FRAMES[0], SIZE).params / MIB
    peaks = []
    for frames in MEMORY_FRAMES:
        measured = measure_isolated(one_block, frames, SIZE, settings, memory_limit_mib=budget_mib)
        print(f"  {one_block.name} N={frames}: peak {measured.peak_memory_mib} MiB "
              f"{measured.latencies_ms} ms {measured.error or ''}", flush=True)
        peaks.append(measured.peak_memory_mib)
    intercept, slope = fit_line(MEMORY_FRAMES, peaks)
    per_frame = slope + input_mib(1)
    frames = math.floor((budget_mib - weights_mib - intercept) / per_frame)
    frames -= frames % tubelet(model)
    return {"weights_mib": weights_mib, "peak_mib": dict(zip(MEMORY_FRAMES, peaks, strict=True)),
            "mib_per_frame": per_frame, "intercept_mib": intercept, "largest_frames": frames}


def search(model: BenchModel, guess: int, settings: RunSettings, budget_mib: float, weights_mib: float) -> dict:
    """The largest N (to 5%) whose full-width block runs under what the budget leaves after the
    full model's weights, searched from the fit's guess; every run is kept."""
    one_block = with_arch(model, "-depth1", depth=1)
    step = tubelet(model)
    ran, failed, runs = MEMORY_FRAMES[-1], None, {}
    frames = guess
    while failed is None or failed - ran > max(step, ran // 20):
        measured = measure_isolated(one_block, frames, SIZE, settings, memory_limit_mib=budget_mib - weights_mib)
        print(f"  search {one_block.name} N={frames}: {measured.peak_memory_mib} MiB "
              f"{measured.latencies_ms} ms {measured.error or ''}", flush=True)
        runs[frames] = dataclasses.asdict(measured)
        if measured.error is None:
            ran = frames
        else:
            failed = frames
        upper = failed if failed is not None else 2 * ran
        frames = (ran + upper) // 2 if failed is not None else max(ran + step, int(ran * 1.1))
        frames -= frames % step
    return {"largest_frames": ran, "first_failure": failed, "runs": runs}


def latencies(model: BenchModel, settings: RunSettings, budget_mib: float) -> dict:
    tiny = with_arch(model, "-tiny", **TINY)
    rows = {}
    for frames in LATENCY_FRAMES:
        measured = measure_isolated(tiny, frames, SIZE, settings, memory_limit_mib=budget_mib)
        print(f"  {tiny.name} N={frames}: {measured.latencies_ms} ms, CPU {measured.cpu_times_ms} ms, "
              f"peak {measured.peak_memory_mib} MiB {measured.error or ''}", flush=True)
        rows[frames] = dataclasses.asdict(measured)
    return rows


def cell(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def render(results: dict, budget_mib: float, settings: RunSettings) -> str:
    header = ["model", "attention", *(f"GMACs N={t}" for t in LATENCY_FRAMES),
              *(f"tiny ms N={t}" for t in LATENCY_FRAMES), f"largest N in {budget_mib / 1024:.0f} GiB"]
    lines = [header, ["---", "---"] + ["---:"] * (len(header) - 2)]
    for name, r in results.items():
        tiny = [r["tiny"][t]["latencies_ms"] for t in LATENCY_FRAMES]
        fit = r["memory"]
        searched = r.get("search")
        largest = f"{searched['largest_frames']} (searched)" if searched else f"~{fit['largest_frames']} (fit)"
        lines.append([f"`{name}`", r["attention"], *(cell(r["gmacs"][t]) for t in LATENCY_FRAMES),
                      *(cell(statistics.median(ms)) if ms else "oom" for ms in tiny), largest])
    table = "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)
    threads = settings.threads or torch.get_num_threads()
    return f"""{table}

GMACs: one view of the full-size model at 224 x 224 (counted exactly). Latency: one forward
of a tiny-width copy (64 wide, 2 layers, 2 heads, the full-size token grid), fp32, batch 1,
{threads} thread(s), median of {settings.repeats} after {settings.warmup} warm-up, each point in a fresh process.
Largest N: full width, from the peak memory of one block measured at N = {', '.join(map(str, MEMORY_FRAMES))}
(fitted linearly) plus the full model's weights and the input ("fit"), or the largest N that ran
at full width under the budget, searched to 5% from the fit's guess ("searched").
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per measurement (1: steady on a shared machine)")
    parser.add_argument("--search", default="ff-linear",
                        help="comma-separated models whose largest N is searched by running it (linear-time ones)")
    parser.add_argument("--json", type=Path, help="write every measured number here")
    args = parser.parse_args()
    budget = args.budget_gib * 1024
    settings = RunSettings(device="cpu", warmup=1, repeats=1, threads=args.threads)
    once = dataclasses.replace(settings, warmup=0)
    results = {}
    for model in resolve_models(args.models.split(",")):
        print(model.name, flush=True)
        attention = "linear" if model.family == "ff-linear" else "quadratic"
        gmacs = {t: model_cost(model, t, SIZE).flops.gmacs for t in LATENCY_FRAMES}
        r = {"attention": attention, "gmacs": gmacs, "tiny": latencies(model, settings, budget),
             "memory": largest_frames(model, once, budget)}
        if model.name in args.search.split(","):
            r["search"] = search(model, r["memory"]["largest_frames"], once, budget, r["memory"]["weights_mib"])
        results[model.name] = r
        if args.json:
            write_text_atomic(args.json, json.dumps(results, indent=2))
    print(render(results, budget, settings))


if __name__ == "__main__":
    main()
