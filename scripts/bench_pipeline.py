"""Throughput of the inference engine (issue 11's targets), as one command.

    python scripts/bench_pipeline.py                    # CPU: demo-motion over 200 sample clips, 4K memory
    python scripts/bench_pipeline.py --parts vit        # CPU: VideoMAE-sized random model over K400-like clips
    python scripts/bench_pipeline.py --parts gpu        # the same on CUDA

CPU part: videos/s with the default pipeline against --workers 0 (in-process), alternating
runs, and against the limit cores / (CPU-seconds per video of decoding, preprocessing and the
model, measured single-threaded in-process). Memory part: peak RSS of `vidcls predict` on a
10 s clip at 3840x2160 against the same clip at 640x360 (each in a fresh process).
ViT part (issue 20, item 6): a model directory with videomae-k400's architecture (ViT-B 16x224) and
random weights, --videos-vit clips of 10 s at 456x256 (25 fps, written with PyAV), one view each
(--clips 1 --crops 1, so decoding is a tenth of the work, not a hundredth); videos/s of the default
plan (workers and threads from the rates of the chosen precision and runtime,
vidcls/inference/planning.py) against --workers 0 (left out where the plan is --workers 0) and
--workers 1 with a thread per core (the former default), rounds in alternating order, medians and best.
GPU part (needs CUDA): a model directory with videomae-k400's architecture and random
weights, 200 clips of 10 s at 456x256, --workers cores-2 against --workers 0: videos/s and
the share of wall time the GPU spends in forward passes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.inference.engine import default_workers
from vidcls.video.encode import write_video
from vidcls.video.synthetic import make_sample_clip, random_spec, render_clip


def sample_clips(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_sample_clip(folder / f"{i:04d}.mp4", DIRECTIONS[i % 4], seed=i)
    return folder


def throughput(folder: Path, model, **options) -> float:
    """videos/s of predict_run, what `vidcls predict` runs (it chooses workers and threads from the model's cost)."""
    start = time.perf_counter()
    results = vidcls.predict_run([folder], model, device=options.pop("device", "cpu"), **options).predictions
    elapsed = time.perf_counter() - start
    assert not any(r.error for r in results)
    return len(results) / elapsed


def cpu_part(root: Path, count: int, rounds: int) -> dict:
    folder = sample_clips(root / "sample", count)
    model = vidcls.load_model("demo-motion", device="cpu")
    start_cpu = time.process_time()
    results = vidcls.predict_run([folder], model, device="cpu", workers=0, threads=1).predictions
    cpu_per_video = (time.process_time() - start_cpu) / len(results)
    cores = os.cpu_count() or 1
    runs: dict[str, list[float]] = {"default": [], "workers=0": []}
    for _ in range(rounds):
        runs["default"].append(throughput(folder, model))
        runs["workers=0"].append(throughput(folder, model, workers=0))
    best = {k: max(v) for k, v in runs.items()}
    limit = cores / cpu_per_video
    gmacs = vidcls.predict_run([folder / "0000.mp4"], model, device="cpu", workers=0).cost
    return {"videos": count, "cores": cores,
            "default_workers": default_workers(torch.device("cpu"), gmacs.gmacs * gmacs.views),
            "cpu_s_per_video": round(cpu_per_video, 4), "limit_videos_per_s": round(limit, 1),
            "videos_per_s": {k: [round(x, 1) for x in v] for k, v in runs.items()},
            "speedup_best": round(best["default"] / best["workers=0"], 2),
            "speedup_median": round(statistics.median(runs["default"]) / statistics.median(runs["workers=0"]), 2),
            "share_of_limit_best": round(best["default"] / limit, 2)}


_REPORT_HWM = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("VMHWM", int(line.split()[1]), file=sys.stderr)
atexit.register(report)
from vidcls.cli import main
sys.argv = ["vidcls", "predict", *sys.argv[1:]]
main()
"""


def peak_rss_mib(*args: str) -> float:
    """Peak RSS of a fresh `vidcls predict` process, read from its own /proc/self/status
    (VmHWM is per address space; rusage's maxrss would count the forking parent too)."""
    done = subprocess.run([sys.executable, "-c", _REPORT_HWM, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    kib = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("VMHWM"))
    return kib / 1024


def write_upscaled(path: Path, frames: torch.Tensor, factor: int, fps: int = 10) -> None:
    """Encode frames scaled up `factor` times, one frame at a time (a 4K clip never exists whole)."""
    height, width = frames.shape[1] * factor, frames.shape[2] * factor
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for frame in frames:
            big = frame.repeat_interleave(factor, 0).repeat_interleave(factor, 1).numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")))
        container.mux(stream.encode())


def memory_part(root: Path) -> dict:
    """The same 10 s clip at 640x360 and 3840x2160 (100 frames at 10 fps)."""
    frames = render_clip(random_spec(random.Random(0), "left", frames=100, height=360, width=640))
    big, small = root / "4k.mp4", root / "360p.mp4"
    write_upscaled(big, frames, 6)
    write_upscaled(small, frames, 1)
    rss = {name: peak_rss_mib(str(path), "-m", "demo-motion", "--workers", "0") for name, path in
           (("3840x2160", big), ("640x360", small))}
    return {"peak_rss_mib": {k: round(v) for k, v in rss.items()},
            "ratio": round(rss["3840x2160"] / rss["640x360"], 2)}


def videomae_random(root: Path) -> Path:
    """A model directory with videomae-k400's architecture (ViT-B 16x224, 400 classes) and random weights."""
    from dataclasses import replace

    from vidcls.models import build_model
    from vidcls.zoo.modeldir import save_model_dir
    from vidcls.zoo.resolve import resolve

    card = resolve("videomae-k400", need_weights=False).card
    card = replace(card, name="videomae-random", labels=[f"class {i}" for i in range(400)])
    model_dir = root / "videomae-random"
    if not model_dir.is_dir():
        torch.manual_seed(0)
        save_model_dir(model_dir, card, build_model(card.family, card.arch))
    return model_dir


def k400_like(folder: Path, count: int) -> Path:
    """`count` clips like Kinetics-400's: 10 s, 456x256, 25 fps, H.264 (PyAV's libx264)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if not (folder / f"{i:04d}.mp4").is_file():
            spec = random_spec(random.Random(i), DIRECTIONS[i % 4], frames=250, height=256, width=456)
            write_video(folder / f"{i:04d}.mp4", render_clip(spec), fps=25)
    return folder


def vit_part(root: Path, count: int, rounds: int, runtime: str = "torch") -> dict:
    """The default plan against --workers 0 on this CPU, alternating, each with a warm model."""
    from vidcls.inference.options import RunOptions
    from vidcls.inference.predict import plan_run

    model = vidcls.load_model(str(videomae_random(root)), device="cpu", allow_random=True)
    folder = k400_like(root / "k400like", count)
    recipe = {"clips": 1, "crops": 1, "runtime": runtime}
    _, settings, cost = plan_run(model, RunOptions(clips=1, crops=1, runtime=runtime), torch.device("cpu"))
    throughput(folder / "0000.mp4", model, workers=0, **recipe)  # warm: the cast, the first forward
    arms = {"default": {}, "workers=0": {"workers": 0}, "workers=1": {"workers": 1}}
    if (settings.plan.workers, settings.plan.threads) == (0, os.cpu_count()):
        del arms["workers=0"]  # the plan is --workers 0 here: the same run twice
    runs: dict[str, list[float]] = {name: [] for name in arms}
    for index in range(rounds):  # each round in the other order, so that a machine getting busier hits all alike
        for name in (list(arms) if index % 2 == 0 else list(reversed(arms))):
            runs[name].append(throughput(folder, model, **arms[name], **recipe))
    median = {k: statistics.median(v) for k, v in runs.items()}
    baseline = "workers=0" if "workers=0" in runs else "workers=1"
    return {"videos": count, "cores": os.cpu_count(), "runtime": runtime, "precision": cost.precision,
            "precision_reason": cost.precision_reason, "gmacs_per_video": cost.gmacs * cost.views,
            "plan": {"workers": settings.plan.workers, "threads": settings.plan.threads,
                     "why": settings.plan.reason},
            "videos_per_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "median": {k: round(v, 3) for k, v in median.items()},
            "default_is_workers_0": "workers=0" not in runs,
            f"speedup_median_vs_{baseline}": round(median["default"] / median[baseline], 3),
            f"speedup_best_vs_{baseline}": round(max(runs["default"]) / max(runs[baseline]), 3)}


def gpu_part(root: Path, count: int) -> dict:
    model_dir = videomae_random(root)
    folder = k400_like(root / "k400like", count)
    model = vidcls.load_model(str(model_dir), device="cuda", allow_random=True)
    cores = os.cpu_count() or 1
    out = {}
    for workers in (max(1, cores - 2), 0):
        torch.cuda.synchronize()
        start = time.perf_counter()
        results = vidcls.predict_run([folder], model, device="cuda", workers=workers, batch_size=15).predictions
        wall = time.perf_counter() - start
        busy = sum(r.timing_ms.get("model", 0) for r in results) / 1e3
        out[f"workers={workers}"] = {"videos_per_s": round(len(results) / wall, 2),
                                     "gpu_busy_share": round(busy / wall, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos-vit", type=int, default=8, help="K400-like clips of the vit part")
    parser.add_argument("--runtime", default="torch", help="the vit part's --runtime (torch or openvino)")
    parser.add_argument("--parts", default="cpu,memory", help="comma-separated: cpu, memory, vit, gpu")
    parser.add_argument("--keep", type=Path, help="keep the generated clips and model here (reused by later runs)")
    args = parser.parse_args()
    parts = {"cpu": lambda root: cpu_part(root, args.videos, args.rounds), "memory": memory_part,
             "vit": lambda root: vit_part(root, args.videos_vit, args.rounds, args.runtime),
             "gpu": lambda root: gpu_part(root, args.videos)}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in args.parts.split(","):
            print(json.dumps({name: parts[name](root)}, indent=2), flush=True)


if __name__ == "__main__":
    main()
