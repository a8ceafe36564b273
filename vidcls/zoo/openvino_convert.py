"""A torch model converted to OpenVINO once and kept: `--runtime openvino`.

Conversion (`openvino.convert_model` of the module's torch.export program; every family
converts, see tests/test_openvino.py) takes seconds for a tiny model and ten or more for a
ViT-B, so the IR is kept under `$VIDCLS_HOME/openvino/<key>/model.xml` and
later runs only read it (and OpenVINO's compiled blob, zoo.openvino.compiled_cache). The
key is the sha256 of what the graph depends on: the digest of the module's tensors (the
weights as loaded, so a zoo entry, a model directory and `--weights` are all covered, and
any change of weights converts again), the card at the run's clip shape, the batch
("dynamic": the engine's batches vary; a ViT-B at batch 1 ran no slower with a dynamic batch
axis than with a fixed one), and the OpenVINO version. A cached IR carries its card like an
exported one, so it is itself a valid `--model`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.fileio import atomic_directory
from vidcls.zoo.cache import exclusive, home
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.openvino import IR_NAME, OpenVinoModule, check_device, require, save_ir
from vidcls.zoo.resolve import LoadedModel
from vidcls.zoo.runtime import RuntimeModule, quiet

CACHE_FORMAT = 1  # part of the key: a change in how vidcls converts invalidates old entries


def state_digest(module: nn.Module) -> str:
    """sha256 over the module's tensors (names, dtypes, shapes and bytes): the weights' digest.

    Buffers a checkpoint does not keep (persistent=False) are in it too: the graph holds them as
    constants, and X-CLIP's label embeddings are one (the same names with another prompt are other
    embeddings: without them a run with a prompt got the graph converted without it)."""
    digest = hashlib.sha256()
    tensors = {**module.state_dict(), **dict(module.named_buffers())}
    for name, tensor in tensors.items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def conversion_key(weights: str, card: ModelCard, batch: str | int, openvino_version: str) -> str:
    """The cache key of one conversion: weights' digest, card (at its clip shape), batch and OpenVINO version."""
    facts = {"format": CACHE_FORMAT, "weights": weights, "card": card.to_config(), "batch": batch,
             "openvino": openvino_version}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def convert_module(module: nn.Module, card: ModelCard, batch: str | int = "dynamic") -> Any:
    """An ov.Model of a torch module at the card's clip shape (batch axis dynamic or fixed).

    openvino.convert_model of the module's torch.export program, the graph the ONNX export
    also starts from (every family exports): on this project's 2-core CPU it converted a
    ViT-B 8x224 in 11 s against 59 s for convert_model on the module itself (its TorchScript
    tracing), to a graph of the same speed and parity. The example batch is 2 for a dynamic
    batch (torch.export specialises an axis of size 1); every other axis is then fixed to the
    card's shape, which OpenVINO optimises for.
    """
    ov = require()
    spec = card.input
    example = torch.randn(2 if batch == "dynamic" else int(batch), 3, spec.frames, spec.size, spec.size)
    dynamic = ({0: torch.export.Dim("batch")},) if batch == "dynamic" else None
    try:
        with quiet(), torch.no_grad():
            model = ov.convert_model(torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic))
            model.reshape([-1 if batch == "dynamic" else int(batch), 3, spec.frames, spec.size, spec.size])
    except Exception as exc:  # noqa: BLE001 - the exporter and the frontend raise many types; the user needs one line
        raise VidclsError(f"{card.name}: OpenVINO conversion failed at {spec.frames} frames of {spec.size} px: "
                          f"{type(exc).__name__}: {first_line(exc)}") from None
    return model


def cached_ir(module: nn.Module, card: ModelCard, batch: str | int = "dynamic") -> Path:
    """The IR of `module` at the card's clip shape: converted on first use, read from the cache after.

    Converted under a lock (the ranks of a distributed run, or two commands, may ask at once)
    into a temporary directory renamed into place, so a crash never leaves half an IR.
    """
    ov = require()
    weights = state_digest(module)
    key = conversion_key(weights, card, batch, ov.get_version())
    directory = home() / "openvino" / key
    if not (directory / IR_NAME).is_file():
        with exclusive(f"openvino:{key}"):
            if not (directory / IR_NAME).is_file():
                model = convert_module(module, card, batch)
                facts = {"converted_from": "torch", "weights_sha256": weights, "batch": batch, "quantize": None,
                         "torch": torch.__version__, "openvino": ov.get_version()}
                with atomic_directory(directory) as scratch:
                    save_ir(model, scratch / IR_NAME, card, facts)
    return directory / IR_NAME


def to_openvino(loaded: LoadedModel, frames: int | None = None, size: int | None = None) -> LoadedModel:
    """The same model on OpenVINO (`--runtime openvino`), converted at `frames` x `size` (default: its recipe).

    An IR already is one (returned as it is); an exported ONNX graph is refused: it runs on
    ONNX Runtime as exported.
    """
    if isinstance(loaded.module, OpenVinoModule):
        return loaded
    if isinstance(loaded.module, RuntimeModule):
        raise UsageError(f"{loaded.name} is an exported ONNX graph (it runs on ONNX Runtime); --runtime openvino "
                         f"converts a torch model: pass its REF, or `vidcls export REF --format openvino`")
    check_device(next(loaded.module.parameters()).device)
    path = cached_ir(loaded.module, loaded.card.at_shape(frames, size))
    return LoadedModel(card=loaded.card, module=OpenVinoModule(path), weights=loaded.weights)
