"""`vidcls export`'s one entry point: which format a call asks for, and the options that belong to it.

The format is `--format` or, when not given, what `--out` names (FILE.xml: OpenVINO; anything
else: ONNX, which then insists on FILE.onnx). An option of the other format is refused in one
line rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vidcls.choices import EXPORT_FORMATS
from vidcls.errors import UsageError
from vidcls.export.common import ExportReport


def export_format(out: str | Path, format: str | None) -> str:
    """The format of an export: the one asked for, else the one `out`'s suffix names."""
    if format is None:
        return "openvino" if Path(out).suffix.lower() == ".xml" else "onnx"
    if format not in EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    return format


def export_model(ref: str, out: str | Path, *, format: str | None = None, frames: int | None = None,
                 size: int | None = None, batch: str | int = "dynamic", quantize: str | None = None,
                 opset: int | None = None, calibrate: str | Path | None = None, weights: str | Path | None = None,
                 allow_random: bool = False, labels: str | Sequence[str] | None = None,
                 prompt: str | None = None) -> ExportReport:
    """Export a REF as ONNX (vidcls.export.onnx) or an OpenVINO IR (vidcls.export.openvino), checked against
    torch before it is written.

    format: "onnx" or "openvino" (default: by `out`'s suffix, .xml being OpenVINO). opset is
    ONNX's; calibrate (a folder of clips for NNCF's int8 calibration) OpenVINO's, with quantize="int8".
    labels / prompt: the label set folded into the graph of a model that reads label names (X-CLIP;
    default its own), as predict takes them; another model refuses them.
    """
    chosen = export_format(out, format)
    if calibrate is not None and quantize is None:
        raise UsageError("--calibrate calibrates an int8 export: add --quantize int8")
    shared = {"frames": frames, "size": size, "batch": batch, "quantize": quantize, "weights": weights,
              "allow_random": allow_random, "labels": labels, "prompt": prompt}
    if chosen == "onnx":
        if calibrate is not None:
            raise UsageError("--calibrate is for --format openvino: ONNX Runtime's int8 is dynamic (nothing to "
                             "calibrate)")
        from vidcls.export.onnx import export_onnx

        return export_onnx(ref, out, opset=opset, **shared)
    if opset is not None:
        raise UsageError("--opset is an ONNX option; an OpenVINO IR has none")
    from vidcls.export.openvino import export_openvino

    return export_openvino(ref, out, calibrate=calibrate, **shared)
