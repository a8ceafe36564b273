"""Classify a dataset of videos on a Ray cluster with Ray Data: `vidcls predict ... --ray ADDRESS` (docs/ray.md).

Ray does the scheduling: the video list is a Ray Dataset, and `map_batches` runs a pool of
actors, each of which loads the model once and classifies batches of videos with vidcls's
engine in-process (Ray's actors are the parallelism, so the engine starts no decoding
workers of its own). Results have the schema of `vidcls predict --json`. An output FILE
(.jsonl/.json/.csv) is written by this process in input order, one flushed line per video,
so a stopped run loses nothing finished; an output FOLDER gets Ray's write_json files (one
JSON object per line, any order), written by the cluster. resume skips the videos already in
either.

ray (`ray[data]`) is the optional extra `vidcls[ray]`, imported on first use: without it the
run is one line saying what to install, and nothing else of vidcls needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.fileio import single_writer
from vidcls.inference.engine import Recipe
from vidcls.inference.options import RunOptions
from vidcls.inference.predict import (
    Prediction,
    check_recipe,
    classify,
    model_sha256,
    plan_run,
    run_settings,
    with_labels,
)
from vidcls.inference.results import Record, ResultWriter, check_same_run, output_format, read_records
from vidcls.video.container import is_url
from vidcls.video.inputs import VideoInput, gather
from vidcls.zoo.resolve import load_model, no_weights_message, resolve

INSTALL_HINT = "pip install 'vidcls[ray]'"
# Arrow turns dicts into struct columns whose keys are the union over a block (a failed
# video's empty timing_ms would come back as {"decode": null, ...}): these travel as JSON text.
JSON_COLUMNS = ("top_k", "timing_ms", "warnings")


def require_ray() -> Any:
    """The ray package with Ray Data, or one line saying how to install it."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise VidclsError(f"--ray needs the optional package ray[data]: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the run goes: the cluster's address (auto: the one this node belongs to,
    local: a Ray instance started here, ray://HOST:PORT: Ray Client), CPUs and GPUs per actor (a
    fraction shares a GPU), the number of actors (None: as many as the cluster fits) and the
    videos per map_batches call (Ray's unit of work, retried as a whole)."""

    address: str = "auto"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int | None = None
    batch_videos: int = 8

    def __post_init__(self) -> None:
        if not (self.address in ("auto", "local") or "://" in self.address or ":" in self.address):
            raise UsageError(f"--ray takes auto, local, ray://HOST:PORT or HOST:PORT, got {self.address!r}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise UsageError("--num-cpus must be > 0 and --num-gpus >= 0")
        if min(self.batch_videos, self.concurrency or 1) < 1:
            raise UsageError("--batch-videos and --concurrency must be >= 1")


@dataclass
class RayRun:
    """How a Ray run ended: videos classified here (and failed), those already in the output, the
    actors and the time from the cluster being up."""

    output: Path
    classified: int
    failed: int
    resumed: int
    actors: int
    seconds: float


class Classifier:
    """One Ray actor: the model is loaded once, in __init__, then each call classifies a batch of videos."""

    def __init__(self, model: str, weights: str | None, device: str, options: RunOptions) -> None:
        self.device = torch.device(device)  # "cuda" is the GPU Ray gave this actor (CUDA_VISIBLE_DEVICES)
        self.model = with_labels(load_model(model, weights=weights, device=self.device), options)
        self.recipe, settings, _ = plan_run(self.model, options, self.device)
        self.settings = dataclasses.replace(settings, workers=0)
        self.top_k = options.top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        videos = [VideoInput(str(name), str(source), str(error) or None)
                  for name, source, error in zip(batch["video"], batch["source"], batch["error"], strict=True)]
        records = [p.to_json() for p in classify(videos, self.model, self.device, top_k=self.top_k,
                                                 recipe=self.recipe, settings=self.settings)]
        return {key: [json.dumps(r[key]) if key in JSON_COLUMNS else r[key] for r in records]
                for key in records[0]}


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A result row of Ray's back in the predict --json schema (the JSON_COLUMNS decoded)."""
    return {key: json.loads(value) if key in JSON_COLUMNS else value for key, value in row.items()}


def is_file_output(output: Path) -> bool:
    """A FILE has a result suffix (another suffix is refused, as by predict); a FOLDER has none or exists."""
    if output.is_dir() or not output.suffix:
        return False
    output_format(output)
    return True


def done_videos(output: Path, resume: bool, run: dict[str, Any] | None = None) -> set[str]:
    """The videos already in the output (a file, or the JSON files of a folder); a FILE's records must
    be this run's (`run`: results.check_same_run)."""
    files = [output] if is_file_output(output) else sorted(output.glob("*.json"))
    existing = [f for f in files if f.exists() and f.stat().st_size]
    if existing and not resume:
        raise UsageError(f"--output {output} already has results: add --resume to continue it, or remove it")
    records: list[Record] = [r for f in existing for r in read_records(f, strict=is_file_output(output))]
    if run is not None and is_file_output(output):
        check_same_run(records, run, output)
    return {r["video"] for r in records}


def absolute(source: str) -> str:
    """Actors do not run in this process's folder: local paths are made absolute."""
    return source if is_url(source) or not os.path.exists(source) else os.path.abspath(source)


def default_concurrency(ray: Any, num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster has room for now (GPUs when actors take GPUs, else CPUs)."""
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus))


def checked_model(model: str, weights: str | None, options: RunOptions) -> tuple[str, dict[str, Any]]:
    """The REF as every node can read it (a local path made absolute), checked here once before any
    actor starts: a bad REF, an architecture without weights or a clip the model cannot take is one
    line, not an error in every actor. With it, what the run's records mean (predict.run_settings)."""
    model = os.path.abspath(model) if os.path.exists(model) else model
    resolved = resolve(model, need_weights=weights is None)
    if resolved.weights is None and weights is None:
        raise UsageError(no_weights_message(model, resolved.card.family))
    exported = resolved.weights is not None and resolved.weights.suffix == ".onnx"
    recipe = Recipe.of(resolved.card.input, frames=options.frames, stride=options.stride, sampling=options.sampling,
                       clips=options.clips, crops=options.crops)
    check_recipe(resolved.card, recipe.spec, exported)
    return model, run_settings(resolved.card, model_sha256(resolved.card, weights or resolved.weights), recipe,
                               options.top_k)


def connect(ray: Any, address: str) -> None:
    """Join the cluster at `address` (or start a local instance); a cluster that is not there is one line."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=None if address == "local" else address)
    except ConnectionError as exc:
        raise VidclsError(f"no Ray cluster at --ray {address} ({first_line(exc)}); start one with "
                          f"`ray start --head`, or use --ray local") from None


def ray_predict(videos: Iterable[str | Path], model: str, output: str | Path, *, options: RunOptions | None = None,
                cluster: RayOptions | None = None, weights: str | Path | None = None, resume: bool = False,
                on_start: Callable[[int], None] | None = None,
                on_result: Callable[[Prediction], None] | None = None) -> RayRun:
    """Classify `videos` (files, folders, @LIST files, URLs, as predict takes them) into `output` on
    a Ray cluster (see the module docstring). options: predict's RunOptions (top_k, the clip recipe,
    batch_size, precision; threads per actor, default one per CPU of --num-cpus); cluster: RayOptions
    (default: the cluster this node belongs to, one CPU per actor). on_start(count) gets the number
    of videos to classify, on_result(prediction) each video's result as its record is written to an
    output FILE (a FOLDER is written by the cluster, at the end).
    """
    options, cluster, output = options or RunOptions(), cluster or RayOptions(), Path(output)
    weights = None if weights is None else os.path.abspath(weights)
    with single_writer(output) if is_file_output(output) else contextlib.nullcontext():
        return _ray_predict(videos, model, output, options, cluster, weights, resume, on_start, on_result)


def _ray_predict(videos: Iterable[str | Path], model: str, output: Path, options: RunOptions, cluster: RayOptions,
                 weights: str | None, resume: bool, on_start: Callable[[int], None] | None,
                 on_result: Callable[[Prediction], None] | None) -> RayRun:
    model, meaning = checked_model(model, None if weights is None else str(weights), options)
    done = done_videos(output, resume, meaning)
    todo = [v for v in gather(videos).videos if v.name not in done]
    if on_start is not None:
        on_start(len(todo))
    if not todo:
        return RayRun(output, 0, 0, len(done), 0, 0.0)
    ray = require_ray()
    connect(ray, cluster.address)
    start = time.perf_counter()
    items = [{"video": v.name, "source": absolute(v.source), "error": v.error or ""} for v in todo]
    # a FILE is written in input order; the setting is copied into each dataset when it is created
    ray.data.DataContext.get_current().execution_options.preserve_order = is_file_output(output)
    actors = cluster.concurrency or default_concurrency(ray, cluster.num_cpus, cluster.num_gpus)
    threads = dataclasses.replace(options, threads=options.threads or max(1, int(cluster.num_cpus)))
    actor = {"model": model, "weights": weights, "device": "cuda" if cluster.num_gpus else "cpu", "options": threads}
    results = ray.data.from_items(items).map_batches(
        Classifier, fn_constructor_kwargs=actor, batch_size=cluster.batch_videos, concurrency=actors,
        num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus)
    if is_file_output(output):
        failed = 0
        with ResultWriter(output, options.top_k, resume=resume) as writer:
            for row in results.iter_rows():
                result = {**record(row), "run": meaning}
                writer.write(result)
                failed += result["error"] is not None
                if on_result is not None:
                    on_result(Prediction.from_json(result))
    else:
        results = results.materialize()  # classified once, then counted and written
        failed = sum(row["error"] is not None for row in results.select_columns(["error"]).iter_rows())
        results.write_json(str(output.resolve()))  # Ray's write tasks do not run in this folder
    return RayRun(output, len(todo), failed, len(done), actors, time.perf_counter() - start)
