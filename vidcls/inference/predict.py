"""Flow 1, a video becomes labels: decode -> views -> model -> softmax averaged over views -> top-k.

The public face of the engine (vidcls.inference.engine): every per-video failure is recorded on that
video's Prediction, so one bad file never costs the results of the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from vidcls.bench.cost import RunCost, run_cost
from vidcls.choices import AUTO
from vidcls.devices import choose_precision, native_bf16, resolve_device
from vidcls.errors import UsageError
from vidcls.fileio import file_digest
from vidcls.inference.engine import EngineSettings, Recipe, Scored, score_videos
from vidcls.inference.options import RunOptions
from vidcls.inference.planning import decode_core_seconds, model_core_seconds, plan_engine
from vidcls.models import family_class, make_config
from vidcls.models.validate import check_view
from vidcls.video.inputs import VideoInput, gather
from vidcls.zoo.modeldir import InputSpec, ModelCard
from vidcls.zoo.resolve import LoadedModel, load_model

ModelRef = LoadedModel | str | os.PathLike


@dataclass
class Prediction:
    """The result for one input video, in the JSON schema of `predict --json` (docs/cli.md).

    processing_s is the time spent on this video (decode, preprocess and its share of the
    forward passes, which overlap with other videos' decoding), not the video's duration.
    The JSON also carries it as `seconds`, its deprecated former name, for one more release.
    """

    video: str
    model: str
    top_k: list[dict[str, Any]] = field(default_factory=list)
    frames_used: int = 0
    processing_s: float = 0.0
    error: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the decoder saw damage; the result may be off
    timeline: dict[str, Any] | None = None  # predict --timeline: {"timeline": [...], "segments": [...]}

    @property
    def seconds(self) -> float:
        """Deprecated alias of processing_s (the name read as the video's duration)."""
        warnings.warn("Prediction.seconds is deprecated; use processing_s", DeprecationWarning, stacklevel=2)
        return self.processing_s

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Prediction:
        """A Prediction back from its JSON object (a record of an --output file, or of a Ray run; a
        timeline's windows and segments are not read back)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})

    def to_json(self) -> dict[str, Any]:
        """The JSON object; with --timeline it also has `timeline` and `segments` (docs/cli.md)."""
        row = {**asdict(self), "seconds": self.processing_s}
        over_time = row.pop("timeline")
        return {**row, **(over_time or {})}


def ready_model(model: ModelRef, weights: str | Path | None = None,
                device: str | torch.device | None = None) -> tuple[LoadedModel, torch.device]:
    """(model, device its inputs go to) for a LoadedModel or a REF.

    A REF is loaded on `device` (default auto) and refused when it has no trained weights:
    a random head would print confident-looking nonsense. A LoadedModel stays where it is;
    `device` defaults to that of its parameters.
    """
    if isinstance(model, LoadedModel):
        if weights is not None:
            raise UsageError("weights= replaces the weights of a REF; load_model(ref, weights=...) a LoadedModel")
        return model, resolve_device(device) if device is not None else next(model.module.parameters()).device
    target = resolve_device("auto" if device is None else device)
    return load_model(os.fspath(model), weights=weights, device=target), target


def with_labels(loaded: LoadedModel, options: RunOptions) -> LoadedModel:
    """The model with the run's label set: `options.labels` (and `prompt`) on a model that reads label
    names (X-CLIP), encoded now, before any video is decoded; a model without a text side given labels
    or a prompt is a UsageError (exit 2), as is a text model left with no label set at all."""
    if options.labels is not None:
        loaded.use_labels(options.labels, options.prompt)
    elif options.prompt is not None:
        if not loaded.has_text:
            loaded.use_labels((), options.prompt)  # the one-line refusal of a model without a text side
        loaded.check_labelled()
        loaded.use_labels(loaded.card.labels, options.prompt)
    loaded.check_labelled()
    if loaded.has_text:
        loaded.module.encode_labels()  # the text encoder runs here, not inside a traced or timed forward
    return loaded


def runtime_device(device: str | torch.device | None, runtime: str) -> str | torch.device | None:
    """The device a runtime runs on: OpenVINO runs on the CPU, so `auto` (or None) means cpu there."""
    if runtime == "openvino" and (device is None or str(device) == "auto"):
        return "cpu"
    return device


def on_runtime(loaded: LoadedModel, runtime: str, frames: int | None = None) -> LoadedModel:
    """The model on the run's runtime: itself for torch; for openvino its IR at `frames` (default: the
    card's), converted on first use and cached (vidcls.zoo.openvino_convert)."""
    if runtime == "torch":
        return loaded
    from vidcls.zoo.openvino_convert import to_openvino

    return to_openvino(loaded, frames=frames)


def top_k_labels(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The k most probable classes, most probable first."""
    scores, indices = probs.topk(min(k, probs.numel()))
    return [{"label": labels[i], "index": i, "score": round(s, 6)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]


def check_recipe(card: ModelCard, spec: InputSpec, exported: bool = False) -> None:
    """Refuse a clip the model cannot take (UsageError, exit 2) before any video is decoded, with
    the nearest valid frame counts where the tiling sets them (models.validate.check_view): such a
    clip would fail every video. An exported ONNX graph takes only the frames it was exported at."""
    if exported:
        if spec.frames != card.input.frames:
            raise UsageError(f"{card.name}: exported for {card.input.frames}-frame clips, asked for "
                             f"{spec.frames}; use --frames {card.input.frames}, or export it again at that count")
        return
    try:
        check_view(family_class(card.family), make_config(card.family, card.arch), spec.frames, spec.size)
    except UsageError as exc:
        raise UsageError(f"{card.name}: {exc}") from None


def plan_run(loaded: LoadedModel, options: RunOptions, device: torch.device) -> tuple[Recipe, EngineSettings, RunCost]:
    """The run's recipe (refused if the model cannot take it, check_recipe), the engine's settings
    and the cost of one video: the precision is chosen for the device ("auto"), and the default
    workers and threads follow the model's rate at that precision on that runtime against the rate of
    decoding (planning.plan_engine: a model made 3x faster by bf16 or OpenVINO gets the decoding
    workers to keep up with it), the same for every caller."""
    choice = choose_precision(options.precision, device, exported=loaded.exported)
    recipe = Recipe.of(loaded.card.input, frames=options.frames, stride=options.stride, sampling=options.sampling,
                       clips=options.clips, crops=options.crops)
    check_recipe(loaded.card, recipe.spec, loaded.exported)
    cost = run_cost(loaded.card, recipe.clips, recipe.crops, None, frames=recipe.spec.frames, precision=choice)
    gmacs_per_video = cost.gmacs * cost.views
    native = device.type == "cpu" and native_bf16(device)[0]
    model_s = model_core_seconds(gmacs_per_video, choice.precision, run_on(loaded, options.runtime), native)
    plan = plan_engine(os.cpu_count() or 1, device.type, model_s,
                       decode_core_seconds(recipe.views, recipe.spec.frames, recipe.spec.size))
    settings = EngineSettings(batch_size=options.batch_size, workers=options.workers, threads=options.threads,
                              precision=choice.precision, gmacs_per_video=gmacs_per_video, plan=plan)
    return recipe, settings, cost


def run_on(loaded: LoadedModel, runtime: str) -> str:
    """The runtime that will run the model: an exported graph's own (ONNX Runtime, OpenVINO), else `runtime`."""
    if loaded.exported:
        return "openvino" if type(loaded.module).__name__ == "OpenVinoModule" else "onnxruntime"
    return runtime


def model_sha256(card: ModelCard, weights: str | os.PathLike | None, module: torch.nn.Module | None = None) -> str:
    """sha256 of what a model's outputs depend on: its card (config.json: labels, recipe, architecture)
    and its weights file (an OpenVINO IR's .xml and .bin; file digests are remembered across runs,
    fileio.file_digest), or, for a model without a weights file (random, built in memory), its tensors."""
    digest = hashlib.sha256(json.dumps(card.to_config(), sort_keys=True).encode())
    if weights is not None:
        path = Path(weights)
        for file in (path, path.with_suffix(".bin")) if path.suffix.lower() == ".xml" else (path,):
            digest.update(file_digest(file).encode())
    elif module is not None:
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_settings(card: ModelCard, model_digest: str, recipe: Recipe, top_k: int,
                 timeline: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run's records mean, carried by each as `run` (results.RUN_KEYS): the model (name and
    model_sha256), top-k, the clip recipe (frames, stride, sampling, clips, crops) and, over time,
    the windows asked for. --resume refuses to add records of a run that differs (check_same_run)."""
    spec = recipe.spec
    return {"model": card.name, "model_sha256": model_digest, "top_k": top_k, "frames": spec.frames,
            "stride": spec.stride, "sampling": spec.sampling, "clips": recipe.clips, "crops": recipe.crops,
            "timeline": timeline}


def prediction_of(scored: Scored, item: VideoInput, model: LoadedModel, top_k: int) -> Prediction:
    """A video's Prediction from the engine's outcome for it (classify, or `vidcls serve`'s engine)."""
    result = Prediction(video=item.name, model=model.name, frames_used=scored.frames_used, error=scored.error,
                        timing_ms=scored.timing_ms, warnings=scored.warnings)
    if scored.value is not None:
        result.top_k = top_k_labels(scored.value, model.labels, top_k)
    result.processing_s = round(sum(scored.timing_ms.values()) / 1e3, 4)
    return result


def classify(videos: Sequence[VideoInput], model: LoadedModel, device: torch.device, *, top_k: int = 5,
             recipe: Recipe | None = None, settings: EngineSettings | None = None) -> Iterator[Prediction]:
    """Each video's Prediction, in input order, as soon as it is known (the engine's stream).

    recipe defaults to the model's own (InputSpec); settings are the engine's (batch size in
    views, workers, threads, precision), the defaults when None.
    """
    recipe = recipe or Recipe.of(model.card.input)
    settings = settings or EngineSettings()
    for scored in score_videos(videos, model, device, recipe, settings):
        yield prediction_of(scored, videos[scored.position], model, top_k)


def predict_video(path: str | Path, model: LoadedModel, *, top_k: int = 5, clips: int | None = None,
                  crops: int | None = None, device: str | torch.device | None = None,
                  precision: str = AUTO, batch_size: int = 8) -> Prediction:
    """Classify one video in this process; a failure becomes the Prediction's error, never an exception.

    clips / crops default to the model's test recipe; device to where the model is.
    """
    RunOptions(top_k=top_k, clips=clips, crops=crops, precision=precision, batch_size=batch_size)
    model, device = ready_model(model, device=device)
    recipe = Recipe.of(model.card.input, clips=clips, crops=crops)
    item = VideoInput(os.fspath(path), os.fspath(path))
    chosen = choose_precision(precision, device, exported=model.exported).precision
    settings = EngineSettings(batch_size=batch_size, workers=0, threads=torch.get_num_threads(), precision=chosen)
    return next(classify([item], model, device, top_k=top_k, recipe=recipe, settings=settings))


def predict(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
            top_k: int = 5, clips: int | None = None, crops: int | None = None,
            frames: int | None = None, stride: int | None = None, sampling: str | None = None,
            device: str | torch.device | None = None, precision: str = AUTO, batch_size: int = 8,
            workers: int | None = None, threads: int | None = None, runtime: str = "torch",
            labels: str | Sequence[str] | None = None, prompt: str | None = None,
            on_video: Callable[[str, int, int], None] | None = None,
            on_result: Callable[[Prediction], None] | None = None) -> list[Prediction]:
    """Classify every video (folders expanded, @LIST files read, URLs opened by ffmpeg), in input order.

    model: a LoadedModel, or a REF (zoo name, hf://OWNER/REPO[@REV], model directory) that
    is loaded here, with `weights` (a safetensors file) replacing its own if given; a REF
    without trained weights is refused. frames / stride / sampling / clips / crops override
    the model's recipe; batch_size counts views per forward pass; workers are decoding
    processes (None: chosen from the cores, the device and the model's cost, as the CLI does;
    0: in this process) and threads the model process's threads. runtime "openvino" runs the
    model on OpenVINO (CPU), converted once and cached (on_runtime). labels (a list, "a,b,c" or
    "@FILE") and prompt ("a video of {}") classify over any names with a model that reads them
    (X-CLIP; with_labels). on_video(name, index,
    total) and on_result(prediction) are called as each result arrives (progress bars).
    """
    options = RunOptions(top_k=top_k, clips=clips, crops=crops, frames=frames, stride=stride, sampling=sampling,
                         precision=precision, batch_size=batch_size, workers=workers, threads=threads,
                         runtime=runtime, labels=labels, prompt=prompt)
    loaded, target = ready_model(model, weights, runtime_device(device, runtime))
    loaded = with_labels(loaded, options)
    items = gather(videos).videos
    recipe, settings, _ = plan_run(loaded, options, target)
    loaded = on_runtime(loaded, runtime, recipe.spec.frames)
    results = []
    for index, result in enumerate(classify(items, loaded, target, top_k=top_k, recipe=recipe, settings=settings)):
        if on_video is not None:
            on_video(result.video, index, len(items))
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
