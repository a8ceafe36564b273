"""`vidcls export`: a model as a self-describing ONNX file, checked against torch before it is written.

Why ONNX: on a CPU at the sgemm limit, fp32 torch and ONNX Runtime tie, and the next
factor is int8, which ONNX Runtime's dynamic quantisation of the linear layers gives
without torch.ao.quantization (deprecated, scheduled for removal). The graph comes from
the dynamo exporter (`torch.onnx.export(..., dynamo=True)`), the only one that handles
every family (the channel shifts of xvit and ff-linear, topk + gather in vidtr's pooling).

The file carries the model's card (family, architecture, input recipe at the exported
shape, labels) and the facts of its export (opset, batch, quantisation, GMACs of the
torch graph, parity) in its metadata, so `--model FILE.onnx` needs nothing else. Every
file is checked against torch (vidcls.export.parity, the gate every format passes) before
it appears under its name (vidcls.fileio.atomic_file); a file that fails is not written.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vidcls.bench.cost import view_gmacs
from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.export.common import ExportReport, check_quantize, parse_batch, source_model
from vidcls.export.parity import check_parity, random_clip
from vidcls.fileio import atomic_file
from vidcls.zoo import onnx as onnx_runtime
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.runtime import quiet

INPUT_NAME, OUTPUT_NAME = "video", "logits"


def export_onnx(ref: str, out: str | Path, *, frames: int | None = None, size: int | None = None,
                batch: str | int = "dynamic", quantize: str | None = None, opset: int | None = None,
                weights: str | Path | None = None, allow_random: bool = False,
                labels: str | Sequence[str] | None = None, prompt: str | None = None) -> ExportReport:
    """Export a REF (zoo name, hf://, model directory) to `out`, check it, and only then write it.

    frames / size: the clip shape baked into the graph (default: the model's recipe); the
    card stored in the file says the same. batch: "dynamic" or a fixed batch size. opset:
    default torch's. quantize="int8": dynamic quantisation of the linear layers' weights
    (ONNX Runtime). allow_random: export an architecture without trained weights (to benchmark it).
    """
    for package in ("onnx", "onnxscript", "onnxruntime"):
        onnx_runtime.require(package)
    batch = parse_batch(batch)
    check_quantize(quantize)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out}: an exported ONNX model is a .onnx file (an OpenVINO IR: --format openvino)")
    loaded, card = source_model(ref, frames, size, weights, allow_random, labels, prompt)
    module = loaded.module
    with tempfile.TemporaryDirectory(prefix="vidcls-export-") as scratch, atomic_file(out) as candidate:
        start = time.perf_counter()
        fp32 = Path(scratch) / "fp32.onnx" if quantize else candidate
        export_graph(module, card, batch, opset, fp32, ref)
        if quantize:
            quantize_int8(fp32, candidate)
        seconds = time.perf_counter() - start
        session = onnx_runtime.OnnxModule(onnx_runtime.open_session(candidate))
        parity = check_parity(module, session, card, batch, quantize, ref, trained=loaded.weights is not None)
        facts = {"opset": graph_opset(candidate), "batch": batch, "quantize": quantize, "gmacs": view_gmacs(card),
                 "parity": dataclasses.asdict(parity), "torch": torch.__version__}
        write_metadata(candidate, card, facts)
    return ExportReport(path=out, name=card.name, family=card.family, frames=card.input.frames, size=card.input.size,
                        batch=batch, opset=facts["opset"], quantize=quantize, gmacs=facts["gmacs"],
                        seconds=round(seconds, 2), bytes=out.stat().st_size, parity=parity)


def export_graph(module: torch.nn.Module, card: ModelCard, batch: str | int, opset: int | None, path: Path,
                 ref: str) -> None:
    """Trace `module` with the dynamo exporter into an ONNX file (batch axis symbolic when dynamic).

    The example batch is 2 for a dynamic batch: torch.export specialises an axis of size 1.
    """
    example = random_clip(card, 2 if batch == "dynamic" else batch)
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch")}} if batch == "dynamic" else None
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic)
            program.save(str(path))
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        raise VidclsError(f"{ref}: ONNX export failed: {type(exc).__name__}: {first_line(exc)}") from None


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantisation of the linear layers (MatMul with a constant weight):
    int8 weights, activations quantised per batch at run time. Convolutions (the patch
    embedding) stay fp32: ConvInteger is slower than fp32 Conv on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"MatMulConstBOnly": True})


def graph_opset(path: Path) -> int:
    """The default-domain opset an ONNX file was written with."""
    onnx = onnx_runtime.require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def write_metadata(path: Path, card: ModelCard, facts: dict[str, Any]) -> None:
    """Store the card (its config.json) and the export's facts in the file's metadata_props."""
    onnx = onnx_runtime.require("onnx")
    model = onnx.load(str(path))
    values = {onnx_runtime.CARD_KEY: json.dumps(card.to_config()), onnx_runtime.EXPORT_KEY: json.dumps(facts)}
    kept = [prop for prop in model.metadata_props if prop.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "vidcls"
    onnx.save(model, str(path))

