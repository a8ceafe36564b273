"""What demo-motion's embeddings are worth, and what `vidcls embed` costs against `vidcls predict`.

    python scripts/embed_probe.py                        # 40 train + 40 val clips, 5 timing rounds

1. Probe: generated motion clips (vidcls.video.synthetic, appearance drawn at random as for the
   demo model's training, new seeds) in train/<direction>/ and val/<direction>/ folders, embedded
   with `embed_run(..., normalize=True, output="train.npy")`, read back with numpy, and each val
   clip labelled by its nearest train clip (cosine, 1-NN): the README's probe, as a number.
   The classifier's own top-1 on the same val clips is printed beside it, and the 1-NN accuracy of
   the same architecture with random weights (what training put into the features).
2. Localisation: one clip whose shape moves left, up, right, then down (6 s each) embedded per
   window (--timeline, 2 s windows every 1 s); for a query clip of each direction, is the
   window most similar to it inside that direction's leg?
3. Speed: videos/s of embed_run and predict_run on the same 80 clips, default settings (what the
   commands run), alternating, best and median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.models import build_model
from vidcls.video.encode import write_video
from vidcls.video.synthetic import ShapeClipSpec, random_spec, render_clip, render_path

LEG_S, FPS = 6, 8


def motion_folder(root: Path, count: int, seed: int) -> Path:
    """count clips, a quarter per direction, in root/<direction>/; sizes, shapes, speeds and lengths vary."""
    rng = random.Random(seed)
    for i in range(count):
        direction = DIRECTIONS[i % 4]
        (root / direction).mkdir(parents=True, exist_ok=True)
        write_video(root / direction / f"{i:04d}.mp4", render_clip(random_spec(rng, direction,
                                                                               frames=rng.randint(8, 48))))
    return root


def load(stem: Path) -> tuple[np.ndarray, np.ndarray]:
    """The README's loader: vectors of the videos without an error, and their folder names as labels."""
    vectors = np.load(stem.with_suffix(".npy"))
    index = [json.loads(line) for line in stem.with_suffix(".index.jsonl").read_text().splitlines()]
    labels = np.array([Path(r["video"]).parent.name for r in index if r["error"] is None])
    return vectors, labels


def one_nn(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray) -> float:
    """Accuracy of labelling each val vector by its most similar train vector (unit vectors: cosine)."""
    return float(np.mean(train_labels[(val @ train.T).argmax(axis=1)] == val_labels))


def in_memory(model: vidcls.LoadedModel, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    embeddings = vidcls.embed([folder], model, normalize=True)
    return (np.stack([e.vectors.numpy() for e in embeddings]),
            np.array([Path(e.video).parent.name for e in embeddings]))


def probe(root: Path) -> dict:
    for split in ("train", "val"):
        vidcls.embed_run([root / split], "demo-motion", normalize=True, output=root / f"{split}.npy")
    train, val = load(root / "train"), load(root / "val")
    predictions = vidcls.predict([root / "val"], "demo-motion", top_k=1)
    classifier = np.mean([p.top_k[0]["label"] == Path(p.video).parent.name for p in predictions])
    card = vidcls.load_model("demo-motion").card
    torch.manual_seed(0)  # the same architecture with random weights: what training put in
    untrained = vidcls.LoadedModel(card, build_model(card.family, card.arch).eval(), None)
    random_train, random_val = in_memory(untrained, root / "train"), in_memory(untrained, root / "val")
    return {"dim": int(train[0].shape[1]), "train": len(train[0]), "val": len(val[0]),
            "one_nn_accuracy": one_nn(*train, *val), "classifier_top1": float(classifier),
            "one_nn_accuracy_random_weights": one_nn(*random_train, *random_val)}


def localisation(root: Path) -> dict:
    order = ["left", "up", "right", "down"]
    spec = ShapeClipSpec("left", height=64, width=64, size=(12.0, 12.0), speed=0.6, start=(46.0, 46.0),
                         shape="circle", color=(250, 200, 40), background=(20, 30, 60), noise=5.0)
    write_video(root / "long.mp4", render_path(spec, [(d, LEG_S * FPS) for d in order]), fps=FPS)
    rng = random.Random(99)
    for direction in order:
        write_video(root / f"query-{direction}.mp4", render_clip(random_spec(rng, direction, frames=24)))
    windows, = vidcls.embed([root / "long.mp4"], "demo-motion", timeline=True, window_s=2.0, hop_s=1.0,
                            normalize=True)
    queries = vidcls.embed([root / f"query-{d}.mp4" for d in order], "demo-motion", normalize=True)
    hits = []
    for leg, query in enumerate(queries):
        best = int((windows.vectors @ query.vectors).argmax())
        start, end = windows.spans[best]
        hits.append(leg * LEG_S <= (start + end) / 2 < (leg + 1) * LEG_S)
    return {"windows": len(windows.spans), "queries": len(order), "best_window_in_the_right_leg": sum(hits)}


def timed(call, folders: list[Path]) -> float:
    start = time.perf_counter()
    results = call(folders)
    assert results and not any(r.error for r in results)
    return len(results) / (time.perf_counter() - start)


def speed(root: Path, rounds: int) -> dict:
    folders = [root / "train", root / "val"]
    runs = {"embed": lambda f: vidcls.embed_run(f, "demo-motion").embeddings,
            "predict": lambda f: vidcls.predict_run(f, "demo-motion").predictions}
    timed(runs["predict"], folders)  # warm the page cache and the GMAC count
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, call in runs.items():
            rates[name].append(timed(call, folders))
    ratio = [e / p for e, p in zip(rates["embed"], rates["predict"], strict=True)]
    return {**{f"{name}_videos_per_s": {"best": round(max(r), 1), "median": round(statistics.median(r), 1)}
               for name, r in rates.items()},
            "embed_over_predict_median": round(statistics.median(ratio), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        motion_folder(root / "train", args.train, seed=1000)
        motion_folder(root / "val", args.val, seed=2000)
        report = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "probe": probe(root), "localisation": localisation(root), "speed": speed(root, args.rounds)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
