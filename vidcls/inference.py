"""Flow 1, a video becomes labels: decode -> views -> model -> softmax averaged over views -> top-k.

Every per-video failure is caught here and recorded on that video's Prediction, so one bad
file never costs the results of the others.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import choices
from .errors import UsageError, VidclsError, first_line
from .transforms import eval_views
from .video import load_clips
from .zoo import LoadedModel, load_model

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                              ".wmv", ".flv", ".ts", ".3gp", ".ogv"})
PRECISIONS = {name: getattr(torch, dtype) for name, dtype in choices.PRECISIONS.items()}
ModelRef = LoadedModel | str | os.PathLike


@dataclass
class Prediction:
    """The result for one input video, in the JSON schema of `predict --json` (docs/cli.md).

    processing_s is the wall time spent on this video (decode, preprocess, model), not the
    video's duration. The JSON also carries it as `seconds`, its deprecated former name,
    for one more release.
    """

    video: str
    model: str
    top_k: list[dict[str, Any]] = field(default_factory=list)
    frames_used: int = 0
    processing_s: float = 0.0
    error: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Deprecated alias of processing_s (the name read as the video's duration)."""
        warnings.warn("Prediction.seconds is deprecated; use processing_s", DeprecationWarning, stacklevel=2)
        return self.processing_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.processing_s}


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand directories into the video files below them (sorted); keep file paths as given.

    A path that does not exist is kept so it is reported as a failed input, not dropped.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*")
                                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS))
        else:
            found.append(item)
    return found


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; an unavailable CUDA request is a usage error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad device {name!r}; use {choices.DEVICE_METAVAR}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"bad precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16; fp32 runs without autocast."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def check_options(top_k: int = 5, clips: int | None = None, crops: int | None = None,
                  precision: str = "fp32") -> None:
    """Refuse values that would fail on every video, before a model is loaded or a video decoded."""
    if top_k < 1 or (clips is not None and clips < 1):
        raise UsageError(f"top_k and clips must be >= 1, got top_k={top_k}, clips={clips}")
    if crops is not None and crops not in choices.CROPS:
        raise UsageError(f"crops must be 1 (centre) or 3 (left/centre/right), got {crops}")
    check_precision(precision)


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


@torch.inference_mode()
def view_probabilities(model: LoadedModel, views: torch.Tensor, device: torch.device,
                       precision: str = "fp32", batch_size: int = 8) -> torch.Tensor:
    """Softmax over classes averaged over all views (views, 3, T, H, W) -> (classes,)."""
    probs = []
    with autocast_context(device, precision):
        for chunk in views.split(batch_size):
            logits = model.module(chunk.to(device, non_blocking=True))
            probs.append(logits.float().softmax(dim=-1).cpu())
    return torch.cat(probs).mean(dim=0)


def top_k_labels(probs: torch.Tensor, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The k most probable classes, most probable first."""
    scores, indices = probs.topk(min(k, probs.numel()))
    return [{"label": labels[i], "index": i, "score": round(s, 6)}
            for s, i in zip(scores.tolist(), indices.tolist())]


def predict_video(path: str | Path, model: LoadedModel, *, top_k: int = 5, clips: int | None = None,
                  crops: int | None = None, device: str | torch.device | None = None,
                  precision: str = "fp32", batch_size: int = 8) -> Prediction:
    """Classify one video; a decoding failure becomes the Prediction's error, never an exception.

    clips / crops default to the model's test recipe; device to where the model is.
    """
    check_options(top_k, clips, crops, precision)
    model, device = ready_model(model, device=device)
    spec = model.card.input
    result = Prediction(video=str(path), model=model.name)
    start = time.perf_counter()
    try:
        decoded, _ = load_clips(path, frames=spec.frames, stride=spec.stride,
                                clips=clips or spec.clips, sampling=spec.sampling)
    except VidclsError as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not lose the others
        result.error = f"could not decode ({type(exc).__name__}: {first_line(exc)})"
    else:
        t_decode = time.perf_counter()
        views = eval_views(decoded, spec.size, crops or spec.crops, spec.mean, spec.std, spec.resize,
                           spec.aspect)
        t_pre = time.perf_counter()
        probs = view_probabilities(model, views, device, precision, batch_size)
        t_model = time.perf_counter()
        result.top_k = top_k_labels(probs, model.labels, top_k)
        result.frames_used = int(decoded.shape[0] * decoded.shape[1])
        result.timing_ms = {"decode": round(1e3 * (t_decode - start), 2),
                            "preprocess": round(1e3 * (t_pre - t_decode), 2),
                            "model": round(1e3 * (t_model - t_pre), 2)}
    result.processing_s = round(time.perf_counter() - start, 4)
    return result


def predict(videos: Iterable[str | Path], model: ModelRef, *, weights: str | Path | None = None,
            top_k: int = 5, clips: int | None = None, crops: int | None = None,
            device: str | torch.device | None = None, precision: str = "fp32", batch_size: int = 8,
            on_video: Callable[[Path, int, int], None] | None = None,
            on_result: Callable[[Prediction], None] | None = None) -> list[Prediction]:
    """Classify every video (directories expanded), in input order.

    model: a LoadedModel, or a REF (zoo name, hf://OWNER/REPO[@REV], model directory) that
    is loaded here, with `weights` (a safetensors file) replacing its own if given; a REF
    without trained weights is refused. The other options are predict_video's.
    on_video(path, index, total) is called before each video and on_result(prediction)
    after it (progress bars).
    """
    check_options(top_k, clips, crops, precision)
    loaded, target = ready_model(model, weights, device)
    paths = find_videos(videos)
    results = []
    for index, path in enumerate(paths):
        if on_video is not None:
            on_video(path, index, len(paths))
        results.append(predict_video(path, loaded, top_k=top_k, clips=clips, crops=crops, device=target,
                                     precision=precision, batch_size=batch_size))
        if on_result is not None:
            on_result(results[-1])
    return results
