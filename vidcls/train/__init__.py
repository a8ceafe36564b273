"""Fine-tuning: `vidcls train` as a library call (train is also vidcls.train_model).

    >>> from vidcls.train import TrainConfig, train
    >>> result = train(TrainConfig(model="xvit-tiny", train="data/train", val="data/val", output="runs/x"))
    >>> result.best_top1, result.output   # runs/x is a model directory: vidcls.load_model("runs/x")
    >>> train(TrainConfig(..., output="runs/x", epochs=20, resume=True))   # extend it to 20 epochs

Modules, in the order a run uses them: data (samples, Dataset, loaders), weights (the
starting model), distributed (torchrun / DDP), loop (optimise, evaluate, resume, signals),
checkpoint (what DIR holds), log (console, train.log, metrics.jsonl).
"""

from vidcls.train.config import TrainConfig, TrainResult
from vidcls.train.loop import train

__all__ = ["TrainConfig", "TrainResult", "train"]
