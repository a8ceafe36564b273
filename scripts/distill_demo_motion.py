"""The CPU check of `vidcls distill` (issue 23): demo-motion distilled into ff-linear on generated clips.

    python scripts/distill_demo_motion.py data DIR [--clips 400] [--fresh 400]
        writes DIR/flat/ (the clips, no labels: what distill reads), DIR/labelled/CLASS/ (the same
        clips, hard links, for the from-scratch comparison) and DIR/fresh/CLASS/ (unseen clips)
    vidcls distill --teacher demo-motion --student ff-linear --data DIR/flat --output RUN
    python scripts/distill_demo_motion.py agree RUN DIR/fresh [--also MODEL ...]
        top-1 agreement with demo-motion and accuracy on the labels, per model, on DIR/fresh

The clips are drawn as demo-motion's training clips were (scripts/train_demo_motion.py: one shape
moving left / right / up / down, 32-128 px, 8-48 frames, random shape, colours, speed, noise and
static distractors), encoded as H.264, so the student sees what `vidcls predict` would feed it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from vidcls.choices import DIRECTIONS
from vidcls.inference.predict import predict
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip


def write_clips(root: Path, count: int, seed: int, flat: Path | None) -> None:
    rng = random.Random(seed)
    for i in range(count):
        direction = DIRECTIONS[rng.randrange(len(DIRECTIONS))]
        spec = random_spec(rng, direction=direction, frames=rng.randint(8, 48))
        path = root / direction / f"{seed}-{i:04d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, render_clip(spec))
        if flat is not None:
            flat.mkdir(parents=True, exist_ok=True)
            os.link(path, flat / path.name)


def data(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    write_clips(args.dir / "labelled", args.clips, args.seed, args.dir / "flat")
    write_clips(args.dir / "fresh", args.fresh, args.seed + 1, None)
    print(f"wrote {args.clips} clips to {args.dir / 'flat'} (and by class to {args.dir / 'labelled'}), "
          f"{args.fresh} unseen ones to {args.dir / 'fresh'} in {time.perf_counter() - began:.0f}s")


def agree(args: argparse.Namespace) -> None:
    videos = sorted(p for p in args.fresh.rglob("*.mp4"))
    truth = [p.parent.name for p in videos]
    top1 = {}
    for model in ["demo-motion", str(args.run), *args.also]:
        predictions = predict([str(v) for v in videos], model, top_k=1)
        top1[model] = [p.top_k[0]["label"] for p in predictions]
    teacher = top1["demo-motion"]
    rows = {}
    for model, labels in top1.items():
        rows[model] = {"agreement_with_demo_motion": sum(a == b for a, b in zip(labels, teacher, strict=True))
                       / len(videos),
                       "accuracy": sum(a == b for a, b in zip(labels, truth, strict=True)) / len(videos)}
        print(f"{model}: agrees with demo-motion on {100 * rows[model]['agreement_with_demo_motion']:.2f}% of "
              f"{len(videos)} unseen clips, accuracy {100 * rows[model]['accuracy']:.2f}%")
    if args.json:
        args.json.write_text(json.dumps({"videos": len(videos), "models": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("data", help="write the clips")
    make.add_argument("dir", type=Path)
    make.add_argument("--clips", type=int, default=400)
    make.add_argument("--fresh", type=int, default=400)
    make.add_argument("--seed", type=int, default=100)
    check = commands.add_parser("agree", help="agreement with demo-motion on unseen clips")
    check.add_argument("run", type=Path, help="the distilled model directory")
    check.add_argument("fresh", type=Path)
    check.add_argument("--also", nargs="*", default=[], help="more models to compare (e.g. a from-scratch run)")
    check.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data(args) if args.command == "data" else agree(args)


if __name__ == "__main__":
    main()
