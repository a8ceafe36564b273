"""What `vidcls distill` costs on a GPU: a ViT-B teacher distilled into ff-linear on generated clips.

    python scripts/distill_gpu.py                   # one GPU: TimeSformer ViT-B/16 8 x 224, bf16
    python scripts/distill_gpu.py --quick           # anywhere (CPU): a tiny teacher, to check the script

The teacher has random weights (the cost does not depend on them, and no download is needed), so
its agreement numbers mean nothing here; what is measured is each stage's speed (clips/s, training
clips only) and peak memory, from the run's metrics.jsonl, and the teacher's and student's GMACs
and memory at longer clips, from its distill.json. From the clips/s the script estimates one epoch
of Kinetics-400 (240k clips) per stage. Clips are drawn by vidcls.video.synthetic (one moving shape,
224 px, 16-32 frames) and encoded as H.264 by a process pool, so decoding is real work, as on
Kinetics. Under 8 minutes on one H100 with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from vidcls.choices import DIRECTIONS
from vidcls.models import build_model
from vidcls.train import DistillConfig, distill
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir

KINETICS_CLIPS = 240_000
FULL = {"arch": {"num_classes": 400, "num_frames": 8, "img_size": 224, "patch_size": 16, "embed_dim": 768,
                 "depth": 12, "num_heads": 12},
        "input": InputSpec(frames=8, sampling="segment", size=224, mean=(0.45,) * 3, std=(0.225,) * 3),
        "clips": 512, "side": 224, "batch_size": 32, "precision": "bf16", "report_frames": (8, 32, 64, 128)}
QUICK = {"arch": {"num_classes": 4, "num_frames": 8, "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2,
                  "num_heads": 4},
         "input": InputSpec(frames=8, sampling="segment", size=32, mean=(0.5,) * 3, std=(0.5,) * 3),
         "clips": 24, "side": 48, "batch_size": 4, "precision": "fp32", "report_frames": (8, 32)}


def write_clip(job: tuple[Path, int, int]) -> None:
    path, seed, side = job
    rng = random.Random(seed)
    spec = random_spec(rng, DIRECTIONS[seed % 4], frames=rng.randint(16, 32), height=side, width=side)
    write_video(path, render_clip(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny teacher on a few clips (CPU)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vidcls-distill-gpu"))
    parser.add_argument("--clips", type=int, help="generated clips (default 512, quick 24)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--precision", help="default bf16 (quick: fp32)")
    parser.add_argument("--teacher-family", default="divided", choices=("divided", "joint"))
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    clips, batch = args.clips or setup["clips"], args.batch_size or setup["batch_size"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.quick and device != "cuda":
        raise SystemExit("no GPU: run with --quick to check the script on a CPU")
    began = time.perf_counter()

    teacher_dir, videos, run = args.work / "teacher", args.work / "clips", args.work / "run"
    torch.manual_seed(0)
    labels = list(DIRECTIONS) if args.quick else [f"class{i}" for i in range(400)]
    card = ModelCard("random-teacher", args.teacher_family, setup["arch"], setup["input"], labels)
    save_model_dir(teacher_dir, card, build_model(card.family, card.arch))
    videos.mkdir(parents=True, exist_ok=True)
    jobs = [(videos / f"{i:05d}.mp4", i, setup["side"]) for i in range(clips) if not (videos / f"{i:05d}.mp4").exists()]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(write_clip, jobs, chunksize=8))
    written = time.perf_counter()
    print(f"teacher ({args.teacher_family}, random weights) and {clips} clips ready in {written - began:.0f}s",
          flush=True)

    config = DistillConfig(teacher=str(teacher_dir), model="ff-linear", train=videos, val=videos, output=run,
                           attention_epochs=1, epochs=2, batch_size=batch, lr=1e-3, holdout=0.1,
                           precision=args.precision or setup["precision"], device=device, progress=False,
                           report_frames=setup["report_frames"])
    if run.exists():
        shutil.rmtree(run)
    result = distill(config)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((run / "distill.json").read_text())
    stages = {}
    for row in rows:
        stage = stages.setdefault(row["stage"], {"epochs": 0, "clips_per_s": [], "peak_memory_mib": []})
        stage["epochs"] += 1
        stage["clips_per_s"].append(row["clips_per_s"])
        stage["peak_memory_mib"].append(row["peak_memory_mib"])
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\n{device_name}, {config.precision}, batch {batch}, teacher {args.teacher_family} "
          f"{setup['arch']['embed_dim']} wide x {setup['arch']['depth']} blocks, "
          f"{setup['input'].frames} x {setup['input'].size} px")
    print("stage                 clips/s (best epoch)   peak memory MiB   one Kinetics-400 epoch")
    for name, stage in stages.items():
        speed = max(stage["clips_per_s"])
        peak = max((m for m in stage["peak_memory_mib"] if m is not None), default=None)
        hours = KINETICS_CLIPS / speed / 3600
        stage.update(best_clips_per_s=speed, kinetics_epoch_hours=round(hours, 2))
        print(f"{name:<21} {speed:>20.1f}   {peak if peak is not None else '-':>15}   {hours:>8.1f} h")
    print("\nfrom the teacher to the student, one view:")
    for row in report["cost"]:
        print(f"  {row['frames']:>4} frames: {row['teacher_gmacs']:.4g} -> {row['student_gmacs']:.4g} GMACs, "
              f"{row['teacher_memory_mib']} -> {row['student_memory_mib']} MiB")
    total = time.perf_counter() - began
    print(f"\ndone in {total:.0f}s (distillation run {result.seconds:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "precision": config.precision, "batch_size": batch,
                                         "clips": clips, "stages": stages, "cost": report["cost"],
                                         "seconds": round(total, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
