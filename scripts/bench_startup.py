"""Start-up of one small prediction against importing torch and PyAV (issue 20, item 5: at most +0.5 s).

    python scripts/bench_startup.py [--rounds 7] [--out startup.json]

Writes a demo-motion sample clip, runs `vidcls predict CLIP --model demo-motion` once to fill the memo
($VIDCLS_HOME/memo: the GMACs and the memory pre-check, as any second run finds them), then alternates
`python -c "import torch, av"` and the prediction, each a fresh process, --rounds times; reports the
medians, each round's difference and the median difference. Also times `vidcls models` and
`vidcls sample-clip` (which import neither torch nor, for models, PyAV) against `python -c "pass"`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIDCLS = [sys.executable, "-m", "vidcls"]


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return elapsed


def alternate(commands: dict[str, list[str]], rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(wall(command, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VIDCLS_HOME": str(Path(tmp) / "home")}
        clip = Path(tmp) / "clip.mp4"
        subprocess.run([*VIDCLS, "sample-clip", str(clip), "--direction", "left"], env=env, check=True,
                       capture_output=True)
        predict = [*VIDCLS, "predict", str(clip), "--model", "demo-motion"]
        wall(predict, env)  # the memo, as every later run finds it
        times = alternate({"import torch, av": [sys.executable, "-c", "import torch, av"], "predict": predict},
                          args.rounds, env)
        light = alternate({"python": [sys.executable, "-c", "pass"], "models": [*VIDCLS, "models"],
                           "sample-clip": [*VIDCLS, "sample-clip", str(Path(tmp) / "other.mp4")]},
                          args.rounds, env)
    differences = [p - b for p, b in zip(times["predict"], times["import torch, av"], strict=True)]
    report = {"rounds": args.rounds, "seconds": {k: [round(x, 3) for x in v] for k, v in {**times, **light}.items()},
              "median_s": {k: round(statistics.median(v), 3) for k, v in {**times, **light}.items()},
              "predict_minus_import_s": {"median": round(statistics.median(differences), 3),
                                         "per_round": [round(d, 3) for d in differences]}}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
