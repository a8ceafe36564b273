"""Flow 1 for features: a video becomes vectors (`vidcls embed`), through predict's engine.

A vector is the model's pre-logits, `forward_head(forward_features(x), pre_logits=True)`: the
input of its classifier, what linear probes, retrieval and localisation read. It is computed
per view by the engine's batcher with another Head, so decoding in workers, batching views of
consecutive videos, input order and the failure boundary of each video are predict's; only
what is kept of a view differs. Views "mean" averages a video's views into one vector (the
analogue of predict's mean softmax), "all" keeps one per view; over time (the timeline's one
pass over the file) each window gets its vector(s); normalize makes each kept vector unit length.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidcls.errors import UsageError
from vidcls.inference.batcher import Batcher, Head, mean_rows
from vidcls.inference.engine import EngineSettings, Recipe, Scored, score_videos, waited_on
from vidcls.inference.options import EmbedOptions
from vidcls.inference.timeline import failure_reason, window_pass
from vidcls.video.container import DecodeStats
from vidcls.video.inputs import VideoInput
from vidcls.zoo.resolve import LoadedModel


def pre_logits(module: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """(B, F) input of the classifier for a batch of views (timm's interface, every vidcls family)."""
    return module.forward_head(module.forward_features(batch), pre_logits=True)


def keep_rows(rows: torch.Tensor) -> torch.Tensor:
    return rows


def _unit(reduce: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(reduce(rows), dim=-1)


def embedding_head(options: EmbedOptions) -> Head:
    """The batcher's Head for these options: pre-logits per view, then the mean (or every view), then unit length."""
    reduce = mean_rows if options.views == "mean" else keep_rows
    return Head(pre_logits, partial(_unit, reduce) if options.normalize else reduce)


def embedding_dim(model: LoadedModel) -> int:
    """The length of a vector: the classifier's input width. A model without pre-logits (an
    exported ONNX file gives logits only) is refused before any video is decoded."""
    module = model.module
    if not (hasattr(module, "forward_features") and hasattr(module, "get_classifier")):
        raise UsageError(f"{model.name}: embed needs the model's pre-logits, which an exported ONNX model does not "
                         "give (logits only); use the zoo name or model directory it was exported from")
    return module.get_classifier().in_features


def vidcls_version() -> str:
    """The installed vidcls's version (from its distribution: `vidcls.__version__` sits above this layer)."""
    try:
        return importlib.metadata.version("vidcls")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def embedding_meta(model: LoadedModel, ref: str, recipe: Recipe, options: EmbedOptions, precision: str) -> dict:
    """What the vectors are, stored with every record: model, REF, weights, dim, the recipe, views,
    normalisation, the windows (over time) and the vidcls version (JSON types only, so that a
    record read back compares equal)."""
    return {"model": model.name, "ref": ref, "weights": model.weights, "vector": "pre-logits",
            "dim": embedding_dim(model), "views": options.views, "views_per_video": recipe.views,
            "normalized": options.normalize,
            "recipe": {**recipe.spec.to_dict(), "clips": recipe.clips, "crops": recipe.crops},
            "timeline": {"window_s": options.window_s, "hop_s": options.hop_s} if options.over_time else None,
            "precision": precision, "vidcls": vidcls_version()}


@dataclass
class Embedding:
    """One input video's vectors, or why there are none (`vidcls embed --json`'s object, docs/cli.md).

    vectors: (dim,) with views "mean", (views, dim) with "all"; over time one of those per
    window, (windows, dim) or (windows, views, dim), with spans the windows' (start_s, end_s).
    """

    video: str
    model: str
    vectors: torch.Tensor | None = None
    frames_used: int = 0
    processing_s: float = 0.0
    error: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] | None = None  # over time only

    def rows(self) -> np.ndarray:
        """The vectors as float32 rows (n, dim), in the order of the nested JSON list; (0, 0) when failed."""
        if self.vectors is None:
            return np.zeros((0, 0), np.float32)
        return self.vectors.reshape(-1, self.vectors.shape[-1]).numpy().astype(np.float32, copy=False)

    def to_json(self, meta: dict[str, Any], vectors: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record: `embedding` (nested lists, null when failed) unless `vectors` gives other
        fields in its place (the .npy index's row and rows), then timeline spans, then `meta`."""
        if vectors is None:
            vectors = {"embedding": None if self.vectors is None else self.vectors.tolist()}
        record = {"video": self.video, "model": self.model, **vectors, "frames_used": self.frames_used,
                  "processing_s": self.processing_s, "error": self.error, "timing_ms": self.timing_ms,
                  "warnings": self.warnings}
        if self.spans is not None:
            record["timeline"] = [{"start_s": round(a, 3), "end_s": round(b, 3)} for a, b in self.spans]
        return {**record, "meta": meta}


def embedding_of(scored: Scored, item: VideoInput, model: LoadedModel) -> Embedding:
    """A video's Embedding from the engine's outcome for it (score_videos, or `vidcls serve`'s engine)."""
    return Embedding(item.name, model.name, scored.value, scored.frames_used,
                     round(sum(scored.timing_ms.values()) / 1e3, 4), scored.error, scored.timing_ms, scored.warnings)


def embed_over_time(item: VideoInput, model: LoadedModel, device: torch.device, recipe: Recipe,
                    settings: EngineSettings, options: EmbedOptions, batcher: Batcher | None = None) -> Embedding:
    """One video's vectors per window (the timeline's one pass over the file, in this process);
    any failure is the video's error. batcher: window_pass's (None: its own)."""
    start = time.perf_counter()
    result = Embedding(item.name, model.name, error=item.error, spans=[])
    stats = DecodeStats()
    if item.error is None:
        try:
            found = window_pass(item.source, model, device, recipe.spec, clips=recipe.clips, crops=recipe.crops,
                                window_s=options.window_s, hop_s=options.hop_s, precision=settings.precision,
                                batch_size=settings.batch_size, head=embedding_head(options), stats=stats,
                                batcher=batcher)
        except Exception as exc:  # noqa: BLE001 - decoding, the model: one video's failure
            result.error = failure_reason(exc, item.source)
        else:
            result.vectors, result.spans = found.values, [(w.start_s, w.end_s) for w in found.windows]
            result.frames_used = sum(len(w.indices) for w in found.windows)
    result.warnings = stats.warnings()
    result.processing_s = round(time.perf_counter() - start, 4)
    return result


def embed_videos(videos: Sequence[VideoInput], model: LoadedModel, device: torch.device, recipe: Recipe,
                 settings: EngineSettings, options: EmbedOptions) -> Iterator[Embedding]:
    """Each video's Embedding, in input order, as soon as it is known: the engine's pipeline
    (workers, shared batches), or over time one video after another."""
    embedding_dim(model)
    if options.over_time:  # each video waited on so that a network input does not keep a signal from stopping the run
        for item in videos:
            yield waited_on(item.source, partial(embed_over_time, item, model, device, recipe, settings, options))
        return
    for scored in score_videos(videos, model, device, recipe, settings, embedding_head(options)):
        yield embedding_of(scored, videos[scored.position], model)


@dataclass
class TextEmbedding:
    """`vidcls embed --text`: one label's vector in the space of a text model's video embeddings (X-CLIP's
    joint space: the cosine of a video's and a text's vectors, times the model's logit scale, is the
    model's score for that text before its video-specific prompting)."""

    text: str
    prompt: str
    vector: torch.Tensor

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"text": self.text, "prompt": self.prompt, "embedding": self.vector.tolist(), "meta": meta}


def embed_texts(model: LoadedModel, names: Sequence[str], prompt: str | None = None,
                normalize: bool = False) -> tuple[list[TextEmbedding], dict[str, Any]]:
    """Each name's text embedding (read as `prompt`, default the checkpoint's convention) and what the
    vectors are; a model without a text side is a UsageError."""
    if not model.has_text:
        raise UsageError(f"embed --text needs a model that reads text (X-CLIP: `vidcls models`); {model.name} has "
                         f"no text side")
    prompts = model.module.prompts_for(names, prompt)
    vectors = model.module.encode_text(prompts).float().cpu()
    if normalize:
        vectors = F.normalize(vectors, dim=-1)
    meta = {"model": model.name, "weights": model.weights, "vector": "text embedding", "dim": int(vectors.shape[1]),
            "normalized": normalize, "vidcls": vidcls_version()}
    return [TextEmbedding(n, p, v) for n, p, v in zip(names, prompts, vectors, strict=True)], meta
