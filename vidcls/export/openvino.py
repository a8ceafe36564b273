"""`vidcls export --format openvino`: a model as an OpenVINO IR with its card inside, checked before it is written.

Why OpenVINO: it is the runtime a CPU user would otherwise pick, with its own kernels, bf16
on CPUs that have it, and int8 through NNCF's post-training quantisation. The fp32 IR is
the one conversion `--runtime openvino` also uses (zoo.openvino_convert.convert_module:
openvino.convert_model from the torch module, every family). int8 is NNCF's `quantize` with
the transformer preset (weights and activations of the matrix products int8, SmoothQuant,
fast bias correction), calibrated on the user's clips (`--calibrate DIR`, each decoded by
the model's recipe as predict would) or, by default, on the sample clips the int8 check uses.

The IR carries the card and the facts of its export in its rt_info (zoo.openvino), so
`--model FILE.xml` needs nothing else. It passes the gate every format passes
(vidcls.export.parity: fp32 within 1e-4 of torch, int8 top-1 agreement on decoded sample
clips) before it appears under its name: FILE.xml + FILE.bin (vidcls.fileio.atomic_files),
or a directory holding model.xml + model.bin (atomic_directory). A file that fails is not written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vidcls.bench.cost import view_gmacs
from vidcls.errors import UsageError
from vidcls.export.common import ExportReport, check_quantize, parse_batch, source_model
from vidcls.export.parity import calibration_videos, check_parity, clip_views, write_sample_clips
from vidcls.fileio import atomic_directory, atomic_files
from vidcls.zoo import openvino as openvino_runtime
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.openvino_convert import convert_module
from vidcls.zoo.runtime import quiet


def export_openvino(ref: str, out: str | Path, *, frames: int | None = None, size: int | None = None,
                    batch: str | int = "dynamic", quantize: str | None = None, calibrate: str | Path | None = None,
                    weights: str | Path | None = None, allow_random: bool = False,
                labels: str | Sequence[str] | None = None, prompt: str | None = None) -> ExportReport:
    """Export a REF (zoo name, hf://, model directory) as an OpenVINO IR at `out`, check it, then write it.

    out: FILE.xml (FILE.bin is written beside it) or a directory (model.xml + model.bin).
    frames / size / batch as for the ONNX export. quantize="int8": NNCF post-training
    quantisation calibrated on the clips under `calibrate` (default: the sample clips).
    """
    openvino_runtime.require()
    if quantize:
        openvino_runtime.require("nncf")
    batch = parse_batch(batch)
    check_quantize(quantize)
    videos = calibration_videos(calibrate) if calibrate is not None else None
    out = Path(out)
    if out.suffix and out.suffix.lower() != ".xml":
        raise UsageError(f"--out {out}: an OpenVINO IR is FILE.xml (with FILE.bin beside it) or a directory")
    loaded, card = source_model(ref, frames, size, weights, allow_random, labels, prompt)
    with tempfile.TemporaryDirectory(prefix="vidcls-export-") as scratch, _ir_target(out) as candidate:
        start = time.perf_counter()
        model = convert_module(loaded.module, card, batch)
        if quantize:
            model = quantize_int8(model, card, batch, videos)
        seconds = time.perf_counter() - start
        facts: dict[str, Any] = {"batch": batch, "quantize": quantize, "gmacs": view_gmacs(card),
                                 "calibration": _calibration_note(quantize, calibrate, videos),
                                 "torch": torch.__version__, "openvino": openvino_runtime.require().get_version()}
        checked = Path(scratch) / openvino_runtime.IR_NAME
        openvino_runtime.save_ir(model, checked, card, facts)
        runner = openvino_runtime.OpenVinoModule(checked)
        parity = check_parity(loaded.module, runner, card, batch, quantize, ref, trained=loaded.weights is not None)
        openvino_runtime.save_ir(model, candidate, card, {**facts, "parity": dataclasses.asdict(parity)})
    written = sum(p.stat().st_size for p in (_xml_of(out), _xml_of(out).with_suffix(".bin")))
    return ExportReport(path=out, name=card.name, family=card.family, frames=card.input.frames, size=card.input.size,
                        batch=batch, opset=None, quantize=quantize, gmacs=facts["gmacs"], seconds=round(seconds, 2),
                        bytes=written, parity=parity, format="openvino")


def _xml_of(out: Path) -> Path:
    """The .xml an `--out` names: the file itself, or model.xml in the directory."""
    return out if out.suffix.lower() == ".xml" else out / openvino_runtime.IR_NAME


@contextlib.contextmanager
def _ir_target(out: Path) -> Iterator[Path]:
    """A temporary .xml whose IR (with its .bin) replaces `out` when the block succeeds."""
    if out.suffix.lower() == ".xml":
        with atomic_files(out.with_suffix(".bin"), out) as (_, xml):
            yield xml
    else:
        with atomic_directory(out) as directory:
            yield directory / openvino_runtime.IR_NAME


def quantize_int8(model: Any, card: ModelCard, batch: str | int, videos: list | None) -> Any:
    """NNCF post-training quantisation of an fp32 ov.Model, calibrated on `videos` (default: the sample clips).

    Each clip is decoded as its own calibration sample (a fixed batch repeats it to fill the
    batch), one at a time, so calibrating on many clips never holds them all in memory.
    """
    nncf = openvino_runtime.require("nncf")
    repeat = 1 if batch == "dynamic" else int(batch)
    with tempfile.TemporaryDirectory(prefix="vidcls-calibration-") as scratch:
        clips = videos or write_sample_clips(card, Path(scratch))
        dataset = nncf.Dataset(clips, lambda video: next(clip_views(card, [video])).repeat(repeat, 1, 1, 1, 1).numpy())
        with quiet():
            return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(clips))


def _calibration_note(quantize: str | None, calibrate: str | Path | None, videos: list | None) -> str | None:
    if not quantize:
        return None
    return f"{len(videos)} clips under {calibrate}" if videos else "the sample clips"

