"""vidcls: video classification with linear and quadratic video transformers.

The library API that the command line is built on, one function per command:

    >>> import vidcls
    >>> [p.top_k[0]["label"] for p in vidcls.predict(["clip.mp4"], "demo-motion")]
    >>> model = vidcls.load_model("demo-motion")          # load once, predict many times
    >>> vidcls.evaluate_run("demo-motion", "data/val").summary.top1   # vidcls evaluate
    >>> vidcls.embed(["clip.mp4"], "demo-motion")[0].vectors   # pre-logits; embed_run: vidcls embed
    >>> vidcls.list_models()                              # vidcls models
    >>> vidcls.benchmark(["joint", "ff-linear"], frames=[8, 16])   # vidcls benchmark
    >>> vidcls.download("timesformer-k400")               # vidcls download
    >>> vidcls.convert_checkpoint("ckpt.pth", "xvit", "out/")     # vidcls convert
    >>> vidcls.export_model("demo-motion", "demo.onnx", quantize="int8")  # vidcls export (vidcls[onnx])
    >>> vidcls.ray_predict(["videos/"], "demo-motion", "preds.jsonl")  # vidcls predict --ray (vidcls[ray])
    >>> vidcls.export_model("demo-motion", "demo.xml", quantize="int8")   # OpenVINO IR (vidcls[openvino])
    >>> vidcls.train_model(vidcls.TrainConfig(model="xvit-tiny", train="data/train",
    ...                                       val="data/val", output="runs/x"))  # vidcls train
    >>> vidcls.distill("timesformer-k400", "videos/", "runs/lvt")   # vidcls distill: ff-linear weights

The names are imported on first use: `import vidcls` (and `vidcls --help`) does not load
torch, which takes seconds. `train_model` and `convert_checkpoint` are not called `train`
and `convert` because vidcls.train is a subpackage (Python rebinds `vidcls.train` to it
whenever it is imported), and for symmetry with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vidcls.errors import UsageError as UsageError  # re-exported
from vidcls.errors import VidclsError as VidclsError

__version__ = "0.1.0"

# public name -> (module, attribute), imported by __getattr__ on first use
_LAZY = {
    "LoadedModel": ("zoo.resolve", "LoadedModel"), "ModelCard": ("zoo.modeldir", "ModelCard"),
    "load_model": ("zoo.resolve", "load_model"),
    "save_model_dir": ("zoo.modeldir", "save_model_dir"), "download": ("zoo.fetch", "download"),
    "Prediction": ("inference.predict", "Prediction"), "predict": ("inference.predict", "predict"),
    "predict_video": ("inference.predict", "predict_video"),
    "PredictRun": ("api", "PredictRun"), "predict_run": ("api", "predict_run"),
    "EvalRun": ("api", "EvalRun"), "evaluate_run": ("api", "evaluate_run"),
    "Embedding": ("inference.embed", "Embedding"), "EmbedRun": ("api", "EmbedRun"),
    "embed": ("api", "embed"), "embed_run": ("api", "embed_run"), "embed_text": ("api", "embed_text"),
    "benchmark": ("api", "benchmark"), "list_models": ("zoo.catalog", "list_models"),
    "TrainConfig": ("train.config", "TrainConfig"), "TrainResult": ("train.config", "TrainResult"),
    "train_model": ("train.loop", "train"), "distill": ("api", "distill"),
    "DistillConfig": ("train.config", "DistillConfig"), "convert_checkpoint": ("zoo.convert", "convert_checkpoint"),
    "export_model": ("export.formats", "export_model"), "ExportReport": ("export.common", "ExportReport"),
    "ray_predict": ("inference.ray", "ray_predict"),
}

__all__ = sorted([*_LAZY, "UsageError", "VidclsError", "__version__"])

if TYPE_CHECKING:  # what __getattr__ returns, for type checkers and IDEs
    from vidcls.api import (  # noqa: F401
        EmbedRun,
        EvalRun,
        PredictRun,
        benchmark,
        distill,
        embed,
        embed_run,
        embed_text,
        evaluate_run,
        predict_run,
    )
    from vidcls.export.common import ExportReport  # noqa: F401
    from vidcls.export.formats import export_model  # noqa: F401
    from vidcls.inference.embed import Embedding  # noqa: F401
    from vidcls.inference.predict import Prediction, predict, predict_video  # noqa: F401
    from vidcls.inference.ray import ray_predict  # noqa: F401
    from vidcls.train import DistillConfig, TrainConfig, TrainResult  # noqa: F401
    from vidcls.train import train as train_model  # noqa: F401
    from vidcls.zoo.catalog import list_models  # noqa: F401
    from vidcls.zoo.convert import convert_checkpoint  # noqa: F401
    from vidcls.zoo.fetch import download  # noqa: F401
    from vidcls.zoo.modeldir import ModelCard, save_model_dir  # noqa: F401
    from vidcls.zoo.resolve import LoadedModel, load_model  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vidcls' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
