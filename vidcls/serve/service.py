"""What a request asks of the shared engine, answered with the records `vidcls predict --json` and
`vidcls embed --json` print: the model, loaded once, and the work of one video.

A predict answer is predict's per-video object (Prediction.to_json plus the run's cost fields)
built by the same functions from the same engine outcome, so the server and the command line give
equal answers for the same clip; only the timings differ, and peak_memory_mib is null (the
server's memory is shared by its requests: /metrics has the process's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from vidcls.errors import UsageError
from vidcls.inference.batcher import Scores
from vidcls.inference.embed import embed_over_time, embedding_dim, embedding_meta, embedding_of
from vidcls.inference.engine import Scored, default_threads, default_workers, scored_of
from vidcls.inference.options import EmbedOptions, RunOptions, TimelineOptions
from vidcls.inference.predict import (
    model_sha256,
    on_runtime,
    plan_run,
    prediction_of,
    ready_model,
    run_settings,
    runtime_device,
    with_labels,
)
from vidcls.serve.config import ServeConfig
from vidcls.serve.engine import DecodePool, ModelLoop, RemoteBatcher, Ticket, predict_key
from vidcls.video.container import restrict_to_self_contained_files
from vidcls.video.inputs import VideoInput
from vidcls.viz.timeline_run import timeline_prediction
from vidcls.zoo.resolve import LoadedModel


def labelled(model: LoadedModel, labels: tuple[str, ...] | None) -> LoadedModel:
    """The model as one request sees it: its own classes, or the request's label names on a model that
    reads them (X-CLIP), whose records then name those labels; the model thread scores that request's
    views against them (engine.predict_key). A model without a text side given labels is a 400."""
    if labels is None:
        return model
    if model.exported:  # an ONNX/OpenVINO file, or `--runtime openvino`'s conversion: the label set is in the graph
        raise UsageError(f"model {model.name} runs as a graph whose classes are fixed in it: it cannot score labels "
                         "of your own (leave out `labels`; a model that reads label names, X-CLIP, takes them "
                         "per request on --runtime torch)")
    if not model.has_text:
        raise UsageError(f"model {model.name} has no text side: it cannot score labels of your own "
                         "(leave out `labels` to get its own classes)")
    card = dataclasses.replace(model.card, labels=list(labels), arch={**model.card.arch, "num_classes": len(labels)})
    return dataclasses.replace(model, card=card)  # the same module and cast copies: only the names differ


@dataclass
class Work:
    """What one request asks: predict (top_k, a timeline with window/hop) or embed (how)."""

    top_k: int = 5
    timeline: bool = False
    window_s: float | None = None
    hop_s: float | None = None
    labels: tuple[str, ...] | None = None  # a text model's classes for this request (None: its own)
    embed: EmbedOptions | None = None


class Service:
    """The loaded model, its recipe and settings (as predict plans them), and the shared engine."""

    def __init__(self, config: ServeConfig, on_batch: Any = None) -> None:
        self.config = config
        restrict_to_self_contained_files()  # timelines decode uploads in this process
        options = RunOptions(**config.run_options)
        loaded, self.device = ready_model(config.model, config.weights, runtime_device(config.device, options.runtime))
        loaded = with_labels(loaded, options)  # serve --labels / --prompt; a text model without a label set is refused
        self.recipe, settings, cost = plan_run(loaded, options, self.device)
        self.loaded = on_runtime(loaded, options.runtime, self.recipe.spec.frames)
        self.options = options
        self.cost = dataclasses.replace(cost, peak_memory_mib=None)
        workers = settings.workers if settings.workers is not None else default_workers(self.device,
                                                                                       settings.gmacs_per_video)
        threads = settings.threads or default_threads(self.device, settings.gmacs_per_video)
        self.settings = dataclasses.replace(settings, workers=workers, threads=threads)
        self.ref = config.model
        # model_sha256 per label set, hashed once (not on every request), the last 64 sets kept like their encodings
        self._digest = functools.lru_cache(maxsize=64)(
            lambda labels: model_sha256(labelled(self.loaded, labels).card, self.loaded.weights, self.loaded.module))
        self.decoder = DecodePool(workers, self.recipe)
        extra = {} if on_batch is None else {"on_batch": on_batch}
        module = self.loaded.at_precision(settings.precision)
        if self.loaded.has_text:
            own = tuple(self.loaded.labels)
            extra["relabel"] = lambda names: module.set_labels(names or own)  # encoded once per label set
        self.model = ModelLoop(module, self.device, settings.precision, settings.batch_size,
                               config.max_wait_ms / 1e3, threads, **extra)
        self.threads = concurrent.futures.ThreadPoolExecutor(config.timeline_threads,
                                                             thread_name_prefix="vidcls-timeline")

    def start(self) -> None:
        self.model.start()
        self.decoder.start()

    def stop(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        self.decoder.stop()
        self.model.stop()

    def card(self) -> dict[str, Any]:
        """GET /models: the model's card, as served (recipe, runtime, device, precision, batching)."""
        loaded = self.loaded
        return {"name": loaded.name, "ref": self.ref, "family": loaded.card.family, "weights": loaded.weights,
                "labels": loaded.labels, "zero_shot": loaded.has_text, "card": loaded.card.to_config(),
                "recipe": {**self.recipe.spec.to_dict(), "clips": self.recipe.clips, "crops": self.recipe.crops},
                "runtime": self.options.runtime, "device": str(self.device), "precision": self.settings.precision,
                "batch_size": self.settings.batch_size, "workers": self.settings.workers,
                "max_wait_ms": self.config.max_wait_ms}

    async def run(self, item: VideoInput, work: Work, ticket: Ticket) -> dict[str, Any]:
        """The record of one video (its `error` set when the video failed)."""
        loaded = labelled(self.loaded, work.labels)
        if work.embed is not None:
            return await self._embed(item, work.embed, ticket)
        top_k = min(work.top_k, max(1, len(loaded.labels)))  # as predict_run cuts it
        windows = None
        if work.timeline:
            options = dataclasses.replace(self.options, top_k=top_k)
            over_time = TimelineOptions(work.window_s, work.hop_s)
            windows = {"window_s": over_time.window_s, "hop_s": over_time.hop_s, "smooth": over_time.smooth}
            batcher = RemoteBatcher(self.model, predict_key(work.labels), ticket)
            prediction = await self._in_thread(timeline_prediction, item, loaded, self.device, options,
                                               self.recipe, over_time, None, batcher)
        else:
            scored = await self._scored(item, predict_key(work.labels), ticket)
            prediction = prediction_of(scored, item, loaded, top_k)
        # what the record means, as predict's records say it (the model's digest: its card, so its labels too)
        meaning = run_settings(loaded.card, self._digest(work.labels), self.recipe, top_k, windows)
        return {**prediction.to_json(), **self.cost.to_json(), "run": meaning}

    async def _scored(self, item: VideoInput, key: tuple, ticket: Ticket) -> Scored:
        """Decode in a worker, then the views through the model thread: the engine's Scored."""
        decoded, done = await asyncio.wrap_future(
            self.decoder.decode_then(item, lambda views: self.model.submit(views, key, ticket)))
        if done is None:
            return scored_of(Scores(decoded, None, decoded.error, 0.0))
        return scored_of(Scores(decoded, done.value, done.error, done.model_ms))

    async def _embed(self, item: VideoInput, how: EmbedOptions, ticket: Ticket) -> dict[str, Any]:
        if self.options.runtime != "torch":
            raise UsageError(f"embed runs on torch: this server runs the model on {self.options.runtime}")
        embedding_dim(self.loaded)  # a model without pre-logits is refused before decoding
        meta = embedding_meta(self.loaded, self.ref, self.recipe, how, self.settings.precision)
        key = ("embed", how.views, how.normalize)
        if how.over_time:
            batcher = RemoteBatcher(self.model, key, ticket)
            embedding = await self._in_thread(embed_over_time, item, self.loaded, self.device, self.recipe,
                                              self.settings, how, batcher)
        else:
            embedding = embedding_of(await self._scored(item, key, ticket), item, self.loaded)
        return embedding.to_json(meta)

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, function, *args)

