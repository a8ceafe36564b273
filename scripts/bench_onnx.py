"""Side-by-side latency of torch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (issue 12's targets).

For each model REF: export it (random weights unless it has trained ones) to fp32 and int8
ONNX with `vidcls.export.formats.export_model` (export time, file size, parity as checked), then time
the three runtimes in alternating rounds (torch, ort fp32, ort int8, torch, ...) so that a
busy spell of a shared machine hits all three alike; report the median and the best round.

    python scripts/bench_onnx.py --models joint,divided,xvit,vidtr-s,c-vidtr-s,ff-linear \
        --frames 8 --rounds 7 --out bench-onnx.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vidcls.export.formats import export_model
from vidcls.fileio import write_text_atomic
from vidcls.zoo.resolve import load_model


def timed(module: torch.nn.Module, clip: torch.Tensor) -> float:
    start = time.perf_counter()
    module(clip)
    return 1e3 * (time.perf_counter() - start)


@torch.inference_mode()
def measure(ref: str, frames: int, size: int | None, rounds: int, scratch: Path) -> dict:
    exports = {q or "fp32": export_model(ref, scratch / f"{ref}-{q or 'fp32'}.onnx", frames=frames, size=size,
                                         quantize=q, allow_random=True) for q in (None, "int8")}
    runners = {"torch": load_model(ref, allow_random=True).module}
    runners.update({f"ort-{kind}": load_model(str(report.path)).module for kind, report in exports.items()})
    card = exports["fp32"]
    clip = torch.randn(1, 3, card.frames, card.size, card.size)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for module in runners.values():  # warm-up
        module(clip)
    for _ in range(rounds):
        for name, module in runners.items():
            times[name].append(timed(module, clip))
    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    return {"model": ref, "frames": card.frames, "size": card.size, "gmacs": card.gmacs,
            "threads": torch.get_num_threads(), "median_ms": median, "best_ms": best, "rounds": rounds,
            "speedup_median": {name: median["torch"] / value for name, value in median.items()},
            "speedup_best": {name: best["torch"] / value for name, value in best.items()},
            "export": {kind: {"seconds": r.seconds, "mib": r.bytes / 2**20, "opset": r.opset, "parity": r.parity.line()}
                       for kind, r in exports.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="joint,divided,xvit,vidtr-s,c-vidtr-s,ff-linear")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench-onnx.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as scratch:
        for ref in args.models.split(","):
            rows.append(measure(ref, args.frames, args.size, args.rounds, Path(scratch)))
            row = rows[-1]
            print(f"{ref} T={row['frames']}: median ms "
                  + ", ".join(f"{k} {v:.0f}" for k, v in row["median_ms"].items())
                  + " | speed-up (median) "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_median"].items())
                  + " | best " + ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_best"].items()),
                  flush=True)
            for kind, facts in row["export"].items():
                print(f"  export {kind}: {facts['seconds']:.0f} s, {facts['mib']:.0f} MiB; {facts['parity']}",
                      flush=True)
            write_text_atomic(args.out, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
