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
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidcls.errors import UsageError, VidclsError
from vidcls.zoo.modeldir import ModelCard

ONNX_NAME = "model.onnx"  # the exported graph inside a model directory
CARD_KEY = "vidcls.card"  # ONNX metadata: the card's config.json, as JSON
EXPORT_KEY = "vidcls.export"  # ONNX metadata: how the file was made (JSON: opset, batch, quantize, parity, gmacs)
CPU = torch.device("cpu")  # the default device of sessions and OnnxModule
INSTALL_HINT = "pip install 'vidcls[onnx]' (onnx, onnxruntime, onnxscript)"


def require(package: str = "onnxruntime") -> Any:
    """Import one of the `vidcls[onnx]` packages, or say in one line what to install."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise VidclsError(f"ONNX models need the optional package {package}: {INSTALL_HINT}") from None


def onnx_file(ref: str | os.PathLike) -> Path | None:
    """The .onnx file a REF names: the file itself, or model.onnx in a directory without torch weights.

    A directory holding both model.safetensors and model.onnx stays a torch model (what it
    meant before exports existed); name its .onnx file to run that instead.
    """
    from vidcls.zoo.modeldir import WEIGHTS_NAME

    path = Path(ref).expanduser()
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise UsageError(f"--model {ref}: no such file")
        return path
    if path.is_dir() and (path / ONNX_NAME).is_file() and not (path / WEIGHTS_NAME).is_file():
        return path / ONNX_NAME
    return None


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
    card = ModelCard.from_config(json.loads(metadata[CARD_KEY]), default_name=path.stem)
    return card, json.loads(metadata.get(EXPORT_KEY, "{}"))


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
    so `--threads` and torch.set_num_threads govern both runtimes alike."""
    ort = require()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped (Fail, InvalidGraph, ...)
        if isinstance(exc, VidclsError):
            raise
        raise VidclsError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None


class OnnxModule(nn.Module):
    """An ONNX Runtime session called like a torch model: (B, 3, T, H, W) float tensor -> logits.

    Inputs may be on any device (they are copied to host memory for the session), and the
    logits come back on the module's device, so code written for torch models runs it
    unchanged. The session is not a torch graph: autocast and torch.compile do not apply.
    """

    def __init__(self, session: Any, device: torch.device = CPU) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        # An empty parameter: it carries the device (callers read next(module.parameters()).device)
        # and holds no weights.
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        feed = video.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.session.run(None, {self.input_name: feed})[0]
        return torch.from_numpy(logits).to(self.anchor.device)
