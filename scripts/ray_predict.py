"""Classify a dataset of videos on a Ray cluster with Ray Data (docs/ray.md).

    python scripts/ray_predict.py /data/videos --model demo-motion --output preds.jsonl --address auto
    python scripts/ray_predict.py @val.txt --model /shared/videomae --num-gpus 1 --output /shared/preds/

Ray does the scheduling: the video list is a Ray Dataset, and `map_batches` runs a pool of
actors, each of which loads the model once and classifies batches of videos with vidcls's
engine in-process (Ray's actors are the parallelism, so the engine starts no decoding
workers of its own). Results have the schema of `vidcls predict --json`. An --output FILE
(.jsonl/.json/.csv) is written by this process in input order, one flushed line per video,
so a stopped run loses nothing finished; an --output FOLDER/ gets Ray's write_json files
(one JSON object per line, any order), written by the cluster. --resume skips the videos
already in either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

import vidcls
from vidcls.devices import PRECISIONS
from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.inference.engine import EngineSettings
from vidcls.inference.predict import classify
from vidcls.inference.results import ResultWriter, output_format, read_records
from vidcls.video.inputs import VideoInput, gather, is_url
from vidcls.zoo.resolve import resolve

# Arrow turns dicts into struct columns whose keys are the union over a block (a failed
# video's empty timing_ms would come back as {"decode": null, ...}): these travel as JSON text.
JSON_COLUMNS = ("top_k", "timing_ms", "warnings")


class Classifier:
    """One Ray actor: the model is loaded once, in __init__, then each call classifies a batch of videos."""

    def __init__(self, model: str, device: str, top_k: int, batch_size: int, threads: int, precision: str) -> None:
        self.device = torch.device(device)  # "cuda" is the GPU Ray gave this actor (CUDA_VISIBLE_DEVICES)
        self.model = vidcls.load_model(model, device=self.device)
        self.top_k = top_k
        self.settings = EngineSettings(batch_size=batch_size, workers=0, threads=threads, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        videos = [VideoInput(str(name), str(source), str(error) or None)
                  for name, source, error in zip(batch["video"], batch["source"], batch["error"], strict=True)]
        records = [p.to_json() for p in classify(videos, self.model, self.device, top_k=self.top_k,
                                                 settings=self.settings)]
        return {key: [json.dumps(r[key]) if key in JSON_COLUMNS else r[key] for r in records]
                for key in records[0]}


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A result row back in the predict --json schema."""
    return {key: json.loads(value) if key in JSON_COLUMNS else value for key, value in row.items()}


def is_file_output(output: Path) -> bool:
    """A FILE has a result suffix (another suffix is refused, as by predict); a FOLDER has none or exists."""
    if output.is_dir() or not output.suffix:
        return False
    output_format(output)
    return True


def done_videos(output: Path, resume: bool) -> set[str]:
    """The videos already in --output (a file, or the JSON files of a folder)."""
    files = [output] if is_file_output(output) else sorted(output.glob("*.json"))
    existing = [f for f in files if f.exists() and f.stat().st_size]
    if existing and not resume:
        raise UsageError(f"--output {output} already has results: add --resume to continue it, or remove it")
    return {r["video"] for f in existing for r in read_records(f)}


def absolute(source: str) -> str:
    """Actors do not run in this process's folder: local paths are made absolute."""
    return source if is_url(source) or not os.path.exists(source) else os.path.abspath(source)


def default_concurrency(num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster has room for now (GPUs when actors take GPUs, else CPUs)."""
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="video files, folders, @LIST files, URLs")
    parser.add_argument("--model", required=True, help="REF: zoo name, hf://OWNER/REPO, model directory")
    parser.add_argument("--output", required=True, type=Path,
                        help="FILE.jsonl/.json/.csv (written here, in input order) or FOLDER (Ray's write_json)")
    parser.add_argument("--resume", action="store_true", help="skip the videos already in --output")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs per actor (its torch threads)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (0.25: four actors share a GPU)")
    parser.add_argument("--concurrency", type=int, help="actors (default: as many as the cluster fits)")
    parser.add_argument("--batch-videos", type=int, default=8, help="videos per map_batches call")
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass, as in predict")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bf16/fp16 for GPU actors")
    parser.add_argument("--address", default="auto",
                        help="auto (the running cluster), local (start one here) or ray://HOST:PORT")
    args = parser.parse_args(argv)
    if min(args.top_k, args.batch_videos, args.batch_size, args.concurrency or 1) < 1:
        parser.error("--top-k, --batch-videos, --batch-size and --concurrency must be >= 1")
    return args


def run(args: argparse.Namespace) -> str:
    """Classify args.inputs into args.output on the connected Ray cluster; returns a summary line."""
    start = time.perf_counter()
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    resolve(model)  # a bad REF fails here, in one line, not in every actor
    done = done_videos(args.output, args.resume)
    todo = [v for v in gather(args.inputs).videos if v.name not in done]
    if not todo:
        return f"nothing to do: all {len(done)} videos are already in {args.output}"
    items = [{"video": v.name, "source": absolute(v.source), "error": v.error or ""} for v in todo]
    # a FILE is written in input order; the setting is copied into each dataset when it is created
    ray.data.DataContext.get_current().execution_options.preserve_order = is_file_output(args.output)
    concurrency = args.concurrency or default_concurrency(args.num_cpus, args.num_gpus)
    actor = {"model": model, "device": "cuda" if args.num_gpus else "cpu", "top_k": args.top_k,
             "batch_size": args.batch_size, "threads": max(1, int(args.num_cpus)), "precision": args.precision}
    results = ray.data.from_items(items).map_batches(
        Classifier, fn_constructor_kwargs=actor, batch_size=args.batch_videos, concurrency=concurrency,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    if is_file_output(args.output):
        failed = 0
        with ResultWriter(args.output, args.top_k, resume=args.resume) as writer:
            for row in results.iter_rows():
                writer.write(record(row))
                failed += row["error"] is not None
    else:
        results = results.materialize()  # classified once, then counted and written
        failed = sum(row["error"] is not None for row in results.select_columns(["error"]).iter_rows())
        results.write_json(str(args.output.resolve()))  # Ray's write tasks do not run in this folder
    elapsed = time.perf_counter() - start
    return (f"classified {len(todo)} videos ({failed} failed) with {concurrency} actors in {elapsed:.1f} s "
            f"({len(todo) / elapsed:.2f} videos/s) -> {args.output}"
            + (f" ({len(done)} already there)" if done else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not ray.is_initialized():
            ray.init(address=None if args.address == "local" else args.address)
        print(run(args))
    except ConnectionError as exc:
        print(f"error: no Ray cluster at --address {args.address} ({first_line(exc)}); "
              "start one with `ray start --head`, or use --address local", file=sys.stderr)
        return 1
    except VidclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"stopped: finished results are in {args.output}; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
