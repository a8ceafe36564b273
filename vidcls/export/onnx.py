"""`vidcls export`: a model as a self-describing ONNX file, checked against torch before it is written.

Why ONNX: on a CPU at the sgemm limit, fp32 torch and ONNX Runtime tie, and the next
factor is int8, which ONNX Runtime's dynamic quantisation of the linear layers gives
without torch.ao.quantization (deprecated, scheduled for removal). The graph comes from
the dynamo exporter (`torch.onnx.export(..., dynamo=True)`), the only one that handles
every family (the channel shifts of xvit and ff-linear, topk + gather in vidtr's pooling).

The file carries the model's card (family, architecture, input recipe at the exported
shape, labels) and the facts of its export (opset, batch, quantisation, GMACs of the
torch graph, parity) in its metadata, so `--model FILE.onnx` needs nothing else. Every
file is checked before it appears under its name (vidcls.fileio.atomic_file): fp32 must
match torch within `FP32_TOLERANCE` on a random clip; int8 must agree with torch fp32 on
the top-1 class of decoded sample clips at least `INT8_MIN_AGREEMENT` of the time. An
architecture exported with random weights (to benchmark it) has near-equal logits whose
top-1 flips on rounding noise, so its int8 file is held to the logits' relative error
(`INT8_MAX_RELATIVE_ERROR`) instead. A file that fails is not written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidcls.bench.cost import view_gmacs
from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.fileio import atomic_file
from vidcls.zoo import onnx as onnx_runtime
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.resolve import load_model

FP32_TOLERANCE = 1e-4  # max |logit difference| of an fp32 export against torch
INT8_MIN_AGREEMENT = 0.9  # top-1 agreement of an int8 export with torch fp32 on the sample clips
INT8_MAX_RELATIVE_ERROR = 0.1  # the check of an untrained model's int8 export (its top-1 is noise)
SAMPLE_CLIPS = 8  # decoded sample clips (two per direction) for the int8 check
QUANTIZATIONS = ("int8",)
INPUT_NAME, OUTPUT_NAME = "video", "logits"


@dataclass(frozen=True)
class Parity:
    """How closely an exported file reproduces the torch model (fp32 torch is the reference).

    fp32 exports: max_abs_diff on a random clip. int8 exports: on decoded sample clips,
    top-1 agreement, mean KL(torch || onnx) of the softmax, and the logits' relative error
    ||onnx - torch|| / ||torch||.
    """

    clips: int
    max_abs_diff: float
    top1_agreement: float | None = None
    kl: float | None = None
    relative_error: float | None = None
    trained: bool = True  # False: random weights, int8 judged by relative_error

    def line(self) -> str:
        if self.top1_agreement is None:
            return f"max |logit diff| {self.max_abs_diff:.2g} on {self.clips} random clip(s) (limit {FP32_TOLERANCE:g})"
        limit = f" (minimum {INT8_MIN_AGREEMENT:.0%})", f" (maximum {INT8_MAX_RELATIVE_ERROR:.0%}: random weights)"
        agreement, error = (limit[0], "") if self.trained else ("", limit[1])
        return (f"top-1 agreement {self.top1_agreement:.1%}{agreement} on {self.clips} decoded sample clips, "
                f"KL {self.kl:.2g}, logits' relative error {self.relative_error:.2%}{error}, "
                f"max |logit diff| {self.max_abs_diff:.2g}")


@dataclass(frozen=True)
class ExportReport:
    """What `vidcls export` wrote: the file, its shape and size, how long it took, its parity."""

    path: Path
    name: str
    family: str
    frames: int
    size: int
    batch: str | int
    opset: int
    quantize: str | None
    gmacs: float  # of one view, counted on the torch graph
    seconds: float  # exporting (and quantising), parity check excluded
    bytes: int
    parity: Parity

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def parse_batch(batch: str | int) -> str | int:
    """'dynamic' or a positive batch size (an int, or its text)."""
    if batch == "dynamic":
        return batch
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UsageError(f"--batch must be dynamic or a positive integer, got {batch!r}")
    return value


def export_model(ref: str, out: str | Path, *, frames: int | None = None, size: int | None = None,
                 batch: str | int = "dynamic", quantize: str | None = None, opset: int | None = None,
                 weights: str | Path | None = None, allow_random: bool = False) -> ExportReport:
    """Export a REF (zoo name, hf://, model directory) to `out`, check it, and only then write it.

    frames / size: the clip shape baked into the graph (default: the model's recipe); the
    card stored in the file says the same. batch: "dynamic" or a fixed batch size. opset:
    default torch's. quantize="int8": dynamic quantisation of the linear layers' weights
    (ONNX Runtime). allow_random: export an architecture without trained weights (to benchmark it).
    """
    for package in ("onnx", "onnxscript", "onnxruntime"):
        onnx_runtime.require(package)
    batch = parse_batch(batch)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be {'|'.join(QUANTIZATIONS)}, got {quantize!r}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out}: an exported model is a .onnx file")
    loaded = load_model(ref, weights=weights, allow_random=allow_random)
    if isinstance(loaded.module, onnx_runtime.OnnxModule):
        raise UsageError(f"{ref} is already an exported ONNX model")
    card = exported_card(loaded.card, frames, size)
    module = loaded.module.eval()
    with tempfile.TemporaryDirectory(prefix="vidcls-export-") as scratch, atomic_file(out) as candidate:
        start = time.perf_counter()
        fp32 = Path(scratch) / "fp32.onnx" if quantize else candidate
        export_graph(module, card, batch, opset, fp32, ref)
        if quantize:
            quantize_int8(fp32, candidate)
        seconds = time.perf_counter() - start
        parity = check_parity(module, card, batch, candidate, quantize, ref, trained=loaded.weights is not None)
        facts = {"opset": graph_opset(candidate), "batch": batch, "quantize": quantize, "gmacs": view_gmacs(card),
                 "parity": dataclasses.asdict(parity), "torch": torch.__version__}
        write_metadata(candidate, card, facts)
    return ExportReport(path=out, name=card.name, family=card.family, frames=card.input.frames, size=card.input.size,
                        batch=batch, opset=facts["opset"], quantize=quantize, gmacs=facts["gmacs"],
                        seconds=round(seconds, 2), bytes=out.stat().st_size, parity=parity)


def exported_card(card: ModelCard, frames: int | None, size: int | None) -> ModelCard:
    """The card of the exported graph: the model's, with the clip shape the graph was traced at."""
    spec = dataclasses.replace(card.input, frames=frames or card.input.frames, size=size or card.input.size)
    if spec.resize is not None and spec.resize < spec.size:
        spec = dataclasses.replace(spec, resize=None)
    return dataclasses.replace(card, input=spec)


def _random_clip(card: ModelCard, batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, card.input.frames, card.input.size, card.input.size, generator=generator)


def export_graph(module: torch.nn.Module, card: ModelCard, batch: str | int, opset: int | None, path: Path,
                 ref: str) -> None:
    """Trace `module` with the dynamo exporter into an ONNX file (batch axis symbolic when dynamic).

    The example batch is 2 for a dynamic batch: torch.export specialises an axis of size 1.
    """
    example = _random_clip(card, 2 if batch == "dynamic" else batch)
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch")}} if batch == "dynamic" else None
    try:  # a model that cannot take this clip shape says why here, not inside torch.export's trace
        with torch.no_grad():
            module(example[:1])
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"{ref} cannot run on {card.input.frames} frames of {card.input.size} px: "
                         f"{first_line(exc)}") from None
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic)
            program.save(str(path))
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        raise VidclsError(f"{ref}: ONNX export failed: {type(exc).__name__}: {first_line(exc)}") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter's and the quantiser's chatter (progress prints on stdout, warnings about
    torchvision and pre-processing, torch's own deprecations): stdout stays the command's output.
    Errors still surface as exceptions."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantisation of the linear layers (MatMul with a constant weight):
    int8 weights, activations quantised per batch at run time. Convolutions (the patch
    embedding) stay fp32: ConvInteger is slower than fp32 Conv on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"MatMulConstBOnly": True})


def check_parity(module: torch.nn.Module, card: ModelCard, batch: str | int, path: Path, quantize: str | None,
                 ref: str, trained: bool = True) -> Parity:
    """Run the candidate file on ONNX Runtime against torch fp32; VidclsError when it fails.

    trained=False (random weights): an int8 file is judged by the logits' relative error."""
    session = onnx_runtime.OnnxModule(onnx_runtime.open_session(path))
    if quantize is None:
        clips = _random_clip(card, 1 if batch == "dynamic" else batch, seed=1)
        parity = _compare(module, session, clips, batch, with_agreement=False)
        failed = not parity.max_abs_diff <= FP32_TOLERANCE
    else:
        parity = dataclasses.replace(_compare(module, session, sample_views(card), batch, with_agreement=True),
                                     trained=trained)
        failed = not (parity.top1_agreement >= INT8_MIN_AGREEMENT if trained
                      else parity.relative_error <= INT8_MAX_RELATIVE_ERROR)
    if failed:
        raise VidclsError(f"{ref}: the exported graph does not match the torch model ({parity.line()}); "
                          f"nothing written")
    return parity


def _compare(module: torch.nn.Module, session: torch.nn.Module, views: torch.Tensor, batch: str | int,
             with_agreement: bool) -> Parity:
    expected, got = _logits(module, views, batch), _logits(session, views, batch)
    diff = float((got - expected).abs().max())
    if not with_agreement:
        return Parity(clips=len(views), max_abs_diff=diff)
    p, q = expected.log_softmax(-1), got.log_softmax(-1)
    return Parity(clips=len(views), max_abs_diff=diff,
                  top1_agreement=float((expected.argmax(-1) == got.argmax(-1)).float().mean()),
                  kl=float((p.exp() * (p - q)).sum(-1).mean()),
                  relative_error=float((got - expected).norm() / expected.norm()))


@torch.inference_mode()
def _logits(model: torch.nn.Module, views: torch.Tensor, batch: str | int) -> torch.Tensor:
    """Logits of every view, in chunks of a fixed batch (the last one padded) or all at once."""
    if batch == "dynamic":
        return model(views).float()
    chunks = []
    for chunk in views.split(batch):
        padded = torch.cat([chunk, chunk[-1:].expand(batch - len(chunk), *chunk.shape[1:])])
        chunks.append(model(padded)[: len(chunk)].float())
    return torch.cat(chunks)


def sample_views(card: ModelCard, clips: int = SAMPLE_CLIPS) -> torch.Tensor:
    """Sample clips (vidcls.video.synthetic, two per direction) encoded, decoded and cut by the card's recipe,
    as predict would feed them: the int8 check sees real decoded pixels, not noise."""
    from vidcls.choices import DIRECTIONS
    from vidcls.inference.engine import Recipe, decode_views
    from vidcls.video.inputs import VideoInput
    from vidcls.video.synthetic import make_sample_clip

    spec, views = card.input, []
    with tempfile.TemporaryDirectory(prefix="vidcls-samples-") as scratch:
        for i in range(clips):
            path = str(make_sample_clip(Path(scratch) / f"{i}.mp4", direction=DIRECTIONS[i % len(DIRECTIONS)],
                                        frames=max(16, spec.frames * spec.stride), seed=i))
            decoded = decode_views(i, VideoInput(path, path), Recipe(spec, clips=1, crops=1))
            if decoded.views is None:
                raise VidclsError(f"sample clip for the int8 check: {decoded.error}")
            views.append(decoded.views)
    return torch.cat(views)


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

