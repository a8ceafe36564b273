"""Running an exported `.onnx` model on ONNX Runtime as if it were a vidcls torch model.

An exported file is self-describing: `vidcls export` stores the model's card (family,
architecture, input recipe, labels) and the export's own facts in the ONNX metadata, so
this module needs nothing but the file. `OnnxModule` wraps an InferenceSession in the
calling convention of a torch model ((B, 3, T, H, W) float tensor in, logits out), which
is all that predict, evaluate and benchmark ask of `LoadedModel.module`.

onnxruntime (and onnx, onnxscript for exporting) are the optional extra `vidcls[onnx]`;
every entry point here goes through `require` so that a missing package is one line.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.zoo import runtime
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.runtime import CPU

ONNX_NAME = "model.onnx"  # the exported graph inside a model directory
CARD_KEY = "vidcls.card"  # ONNX metadata: the card's config.json, as JSON
EXPORT_KEY = "vidcls.export"  # ONNX metadata: how the file was made (JSON: opset, batch, quantize, parity, gmacs)
INSTALL_HINT = "pip install 'vidcls[onnx]' (onnx, onnxruntime, onnxscript)"
FATAL = 4  # ONNX Runtime's log severity that prints nothing short of a crash
RUN_TIMEOUT_ENV = "VIDCLS_RUN_TIMEOUT"
DEFAULT_RUN_SECONDS = 600.0  # one forward pass of a batch; a ViT-B batch of 8 views takes ~10 s on 2 CPU cores


def require(package: str = "onnxruntime") -> Any:
    """Import one of the `vidcls[onnx]` packages, or say in one line what to install."""
    return runtime.require(package, "ONNX models", INSTALL_HINT)


def onnx_file(ref: str | os.PathLike) -> Path | None:
    """The .onnx file a REF names: the file itself, or model.onnx in a directory without torch weights."""
    return runtime.exported_file(ref, ".onnx", ONNX_NAME)


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, without loading its weights."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types for a corrupt file
        raise VidclsError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return {prop.key: prop.value for prop in model.metadata_props}


def read_onnx_card(path: Path) -> tuple[ModelCard, dict[str, Any]]:
    """(card, export facts) of a file written by `vidcls export`; any other ONNX file is refused."""
    metadata = read_metadata(path)
    if CARD_KEY not in metadata:
        raise VidclsError(f"{path}: an ONNX file without a vidcls card (export it with `vidcls export`)")
    try:
        config, facts = json.loads(metadata[CARD_KEY]), json.loads(metadata.get(EXPORT_KEY, "{}"))
    except ValueError as exc:
        raise VidclsError(f"{path}: its vidcls card is not JSON ({first_line(exc)}); export it again with "
                          f"`vidcls export`") from None
    if not isinstance(config, dict) or not isinstance(facts, dict):
        raise VidclsError(f"{path}: its vidcls card is not a JSON object; export it again with `vidcls export`")
    try:
        card = ModelCard.from_config(config, default_name=path.stem)
    except VidclsError as exc:
        raise VidclsError(f"{path}: {exc}") from None
    return card, facts


def providers(device: torch.device) -> list[str]:
    """Execution providers for a device: CUDA first when asked for and installed (onnxruntime-gpu)."""
    available = require().get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise UsageError(f"device {device} asked for, but this onnxruntime has no CUDA provider; "
                             f"install onnxruntime-gpu, or pass --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path, device: torch.device = CPU, threads: int | None = None) -> Any:
    """An InferenceSession with all graph optimisations; threads defaults to torch's CPU thread count,
    so `--threads` and torch.set_num_threads govern both runtimes alike. ONNX Runtime's own log
    (coloured lines on stderr) is off: every failure reaches the caller as an exception, said in one line."""
    ort = require()
    ort.set_default_logger_severity(FATAL)
    options = ort.SessionOptions()
    options.log_severity_level = FATAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped (Fail, InvalidGraph, ...)
        if isinstance(exc, VidclsError):
            raise
        raise VidclsError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None


def output_classes(session: Any, path: Path) -> int | None:
    """How many classes the graph's first output scores: its last axis when the graph states it
    (None when symbolic); an output that is not (batch, classes) is refused."""
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else None
    if not shape or len(shape) != 2:
        raise VidclsError(f"{path}: the graph's output must be (batch, classes) logits, not of shape {shape}")
    return shape[-1] if isinstance(shape[-1], int) else None


def check_card_outputs(session: Any, card: ModelCard, path: Path) -> None:
    """The card's labels must be the graph's outputs, one for one, as a torch model's head must
    (resolve.check_labels): otherwise a top-k index past the labels, or labels no output scores."""
    classes = output_classes(session, path)
    if card.labels is not None and classes is not None and classes != len(card.labels):
        raise VidclsError(f"{path}: its card names {len(card.labels)} labels but the graph outputs {classes} "
                          f"classes; export the model again with `vidcls export`")


def run_seconds() -> float:
    """The longest one forward pass of an exported graph may run (VIDCLS_RUN_TIMEOUT, seconds)."""
    text = os.environ.get(RUN_TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_RUN_SECONDS
    except ValueError:
        raise UsageError(f"{RUN_TIMEOUT_ENV}={text!r} must be a number of seconds") from None
    if not 0 < seconds < math.inf:
        raise UsageError(f"{RUN_TIMEOUT_ENV}={text!r} must be a number of seconds above 0")
    return seconds


class OnnxModule(runtime.RuntimeModule):
    """An ONNX Runtime session called like a torch model: (B, 3, T, H, W) float tensor -> logits
    (vidcls.zoo.runtime.RuntimeModule). The graph runs as exported: autocast does not apply.

    A graph is code (a Loop may run 10^12 times): each forward pass is stopped after run_seconds()
    through ONNX Runtime's RunOptions.terminate, which the runtime checks between kernels and loop
    iterations; the pass then fails in one line, as the batch of any other failing forward does.
    With `classes`, logits of another width are refused the same way.
    """

    def __init__(self, session: Any, device: torch.device = CPU, classes: int | None = None) -> None:
        super().__init__(device)
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.classes = classes
        self.seconds = run_seconds()

    def run(self, feed: np.ndarray) -> np.ndarray:
        options = require().RunOptions()
        options.log_severity_level = FATAL
        timer = threading.Timer(self.seconds, setattr, (options, "terminate", True))
        timer.start()
        try:
            logits = self.session.run(None, {self.input_name: feed}, options)[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped
            if options.terminate:
                raise VidclsError(f"the ONNX graph ran longer than {self.seconds:g} s on one batch and was stopped "
                                  f"({RUN_TIMEOUT_ENV} sets the limit)") from None
            raise VidclsError(f"ONNX Runtime failed: {first_line(exc)}") from None
        finally:
            timer.cancel()
        if logits.ndim != 2 or (self.classes is not None and logits.shape[1] != self.classes):
            raise VidclsError(f"the ONNX graph returned logits of shape {tuple(logits.shape)}, not (batch, "
                              f"{self.classes or 'classes'})")
        return logits
