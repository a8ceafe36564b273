"""The named values that options accept, in one torch-free place.

The command line lists them in `--help` (as click choices) without importing torch, which
would cost seconds on every `vidcls --help`; the library modules that act on them import
them from here, so a new value is added once and both sides see it.
"""

from typing import Any

from vidcls.errors import UsageError

# --precision: name -> torch dtype attribute (inference maps these to dtypes)
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# what predict, evaluate and benchmark accept: "auto" is chosen from the device (devices.choose_precision)
AUTO = "auto"
RUN_PRECISIONS = (AUTO, *PRECISIONS)
# sample-clip --direction: where the shape moves
DIRECTIONS = ("left", "right", "up", "down")
# train --optimizer: name -> default (lr, weight decay)
OPTIMIZERS = {"adamw": (3e-4, 0.05), "sgd": (0.01, 1e-4)}
# train --inflate: where an image patch kernel goes in a tubelet kernel
INFLATIONS = ("central", "average")
# predict --crops: the centre crop, or the papers' left/centre/right 3-crop test
CROPS = (1, 3)
# --device: what the command line accepts (the library takes any torch device)
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
DEVICE_METAVAR = "auto|cpu|cuda[:N]"
# predict --sampling: frames spread over the whole video, or frames x stride consecutive
SAMPLINGS = ("segment", "dense")
ASPECTS = ("crop", "squash")  # InputSpec.aspect: keep the aspect and crop, or squash the whole frame
# embed --views: one vector per video (the mean over its views), or one per view
VIEWS = ("mean", "all")
# the largest recipe values anything accepts (a model's input.* and the flags that override them): every
# view is decoded and held, so frames x clips x crops x size^2 is what one video costs in memory
MAX_CLIPS, MAX_FRAMES, MAX_STRIDE = 100, 1024, 1024


def max_threads() -> int:
    """The most threads or processes a run may ask for: 4 per core (beyond that they only wait on
    each other, and 100000 threads exhaust the process table before any work is done)."""
    import os

    return 4 * max(1, os.cpu_count() or 1)


def check_precision(precision: str, allowed: tuple[str, ...] = RUN_PRECISIONS) -> None:
    """The one check of a precision name (predict, evaluate, timeline and benchmark take "auto" too;
    training names its precision)."""
    if precision not in allowed:
        raise UsageError(f"bad precision {precision!r}; choose from {', '.join(allowed)}")
# --runtime: what runs a torch model (openvino: converted once and cached; the vidcls[openvino] extra)
RUNTIMES = ("torch", "openvino")


def check_runtime(runtime: str) -> None:
    """The one check of a runtime name (predict, evaluate, timeline, benchmark)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"bad runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


# export --format: the file an exported model is written as
EXPORT_FORMATS = ("onnx", "openvino")


# Bounds and vocabularies of config fields (checked by vidcls.models.validate; here so that the recipe,
# vidcls.zoo.spec.InputSpec, is defined without importing torch)
Bounds = dict[str, tuple[float, float]]  # field -> (lowest, highest), both allowed
Choices = dict[str, tuple[Any, ...]]  # field -> the values it may take
