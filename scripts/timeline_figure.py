"""Regenerate the README's timeline picture (docs/timeline.png).

    python scripts/timeline_figure.py                # docs/timeline.png
    python scripts/timeline_figure.py --out x.png    # elsewhere

A 24-second synthetic clip whose shape moves left, up, right, then down (6 s each, the
drawing of vidcls.video.synthetic.render_path), classified over time by the shipped demo-motion
model with the defaults of `vidcls predict --timeline` (2 s windows every 1 s), then drawn
by vidcls.viz.timeline. Everything runs on the CPU in a few seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import vidcls
from vidcls.inference.timeline import segment_rows, timeline
from vidcls.video.encode import write_video
from vidcls.video.synthetic import ShapeClipSpec, render_path
from vidcls.viz.timeline import plot_timeline

FPS = 12
LEGS = [("left", 72), ("up", 72), ("right", 72), ("down", 72)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/timeline.png"))
    args = parser.parse_args()
    spec = ShapeClipSpec("left", height=96, width=96, size=(16.0, 16.0), speed=0.8, start=(76.0, 76.0),
                         shape="circle", color=(250, 200, 40), background=(20, 30, 60), noise=6.0)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "square-loop.mp4"
        write_video(clip, render_path(spec, LEGS), fps=FPS)
        result = timeline(clip, vidcls.load_model("demo-motion"))
    title = "demo-motion on a clip moving left, up, right, down (6 s each): 2 s windows every 1 s"
    print(f"wrote {plot_timeline(result, args.out, title=title)}")
    for row in segment_rows(result):
        print("  ".join(row))


if __name__ == "__main__":
    main()
