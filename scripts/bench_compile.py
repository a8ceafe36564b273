"""torch.compile against eager on CPU, per model and frame count (issue 12, item 5).

For each (model, T): build the model at that shape (random weights: latency does not depend
on them), time the first compiled call (compilation included), then time eager and compiled
forwards in alternating rounds so that a busy spell of a shared machine hits both alike.
Reports medians and best rounds, and how many forwards the compile time takes to pay off:
compile_s / (eager - compiled) per forward.

    python scripts/bench_compile.py --models joint,divided,xvit,vidtr-s,c-vidtr-s,ff-linear \
        --frames 8,16,32 --rounds 5 --out bench-compile.json
    python scripts/bench_compile.py --models joint --frames 8 --precision bf16 --rounds 3   # issue 20

--precision bf16 compiles the model as `--precision bf16` runs it (weights cast once, devices.cast_module)
and also times the eager fp32 forward in each round, what `auto` runs on a CPU without native bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vidcls import devices
from vidcls.bench.models import resolve_models
from vidcls.fileio import write_text_atomic


def timed_ms(step) -> float:
    start = time.perf_counter()
    step()
    return 1e3 * (time.perf_counter() - start)


@torch.inference_mode()
def measure(model, frames: int, rounds: int, precision: str = "fp32") -> dict:
    exact = model.build(frames, model.size)
    module = devices.cast_module(exact, precision)
    compiled = torch.compile(module)
    reference = torch.randn(1, 3, frames, model.size, model.size)
    clip = reference.to(devices.PRECISIONS[precision])
    compile_ms = timed_ms(lambda: compiled(clip))
    module(clip)  # eager warm-up
    times = {"eager": [], "compiled": []} if precision == "fp32" else {"eager": [], "compiled": [], "eager_fp32": []}
    for _ in range(rounds):
        times["eager"].append(timed_ms(lambda: module(clip)))
        times["compiled"].append(timed_ms(lambda: compiled(clip)))
        if precision != "fp32":
            times["eager_fp32"].append(timed_ms(lambda: exact(reference)))
    median = {k: statistics.median(v) for k, v in times.items()}
    saved = median["eager"] - median["compiled"]
    return {"model": model.name, "frames": frames, "size": model.size, "threads": torch.get_num_threads(),
            "precision": precision, "cpu": devices.describe_device(torch.device("cpu")),
            "first_compiled_call_s": compile_ms / 1e3, "median_ms": median,
            "best_ms": {k: min(v) for k, v in times.items()}, "all_ms": times,
            "speedup_median": median["eager"] / median["compiled"],
            "pays_off_after_forwards": compile_ms / saved if saved > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="joint,divided,xvit,vidtr-s,c-vidtr-s,ff-linear")
    parser.add_argument("--frames", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--out", type=Path, default=Path("bench-compile.json"))
    args = parser.parse_args()
    rows = []
    for model in resolve_models(args.models.split(",")):
        for frames in map(int, args.frames.split(",")):
            row = measure(model, frames, args.rounds, args.precision)
            rows.append(row)
            after = row["pays_off_after_forwards"]
            fp32 = f", eager fp32 {row['median_ms']['eager_fp32']:.0f} ms" if "eager_fp32" in row["median_ms"] else ""
            print(f"{row['model']} T={frames} {args.precision}{fp32}: eager {row['median_ms']['eager']:.0f} ms, "
                  f"compiled "
                  f"{row['median_ms']['compiled']:.0f} ms (median of {args.rounds}; "
                  f"best {row['best_ms']['eager']:.0f} / "
                  f"{row['best_ms']['compiled']:.0f}), {row['speedup_median']:.2f}x, first compiled call "
                  f"{row['first_compiled_call_s']:.0f} s, pays off after "
                  f"{'never' if after is None else f'{after:.0f} forwards'}", flush=True)
            write_text_atomic(args.out, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
