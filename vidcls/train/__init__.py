"""Fine-tuning: `vidcls train` as a library call (train is also vidcls.train_model), and `vidcls distill`.

    >>> from vidcls.train import TrainConfig, train
    >>> result = train(TrainConfig(model="xvit-tiny", train="data/train", val="data/val", output="runs/x"))
    >>> result.best_top1, result.output   # runs/x is a model directory: vidcls.load_model("runs/x")
    >>> train(TrainConfig(..., output="runs/x", epochs=20, resume=True))   # extend it to 20 epochs
    >>> from vidcls.train import DistillConfig, distill   # vidcls.distill takes the command's options
    >>> distill(DistillConfig(teacher="demo-motion", model="ff-linear", train="clips/", val="clips/",
    ...                       output="runs/lvt"))   # ff-linear weights from a quadratic teacher

Modules, in the order a run uses them: data (samples, Dataset, loaders), weights (the
starting model), distributed (torchrun / DDP), optim (optimizer, seeding), loop (optimise,
evaluate, resume, signals), validation (the held-out pass train and distill share),
checkpoint (what DIR holds), log (console, train.log, metrics.jsonl).
Distillation: transfer (teacher -> student weights), teacher (what is read from the teacher, the
losses, the cost comparison), distill (the stages, on loop's Trainer).
"""

from vidcls.train.config import DistillConfig, TrainConfig, TrainResult
from vidcls.train.distill import distill
from vidcls.train.loop import train

__all__ = ["DistillConfig", "TrainConfig", "TrainResult", "distill", "train"]
