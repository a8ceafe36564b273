"""`vidcls export`'s one entry point: which format a call asks for, and the options that belong to it.

The format is `--format` or, when not given, what `--out` names (FILE.xml: OpenVINO; anything
else: ONNX, which then insists on FILE.onnx). An option of the other format is refused in one
line rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vidcls.choices import EXPORT_FORMATS
from vidcls.errors import UsageError, VidclsError, printable
from vidcls.export.common import ExportReport
from vidcls.inference.options import check_writable


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
    check_replaceable(Path(out), chosen)
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


def check_replaceable(out: Path, chosen: str) -> None:
    """Refuse (UsageError, before any work) an --out that exists and is not an earlier vidcls export:
    writing would replace it without a word. A vidcls export (an .onnx with a vidcls card, an IR
    with its card in rt_info, a directory holding only such an IR) is replaced: that is exporting again."""
    _check_place(out, chosen)
    if chosen == "onnx":
        if out.is_file() or out.is_symlink():
            _must_be_export(out, out, _onnx_card)
        return
    if out.suffix.lower() == ".xml":
        weights = out.with_suffix(".bin")
        if out.exists() or out.is_symlink():
            _must_be_export(out, out, _ir_card)
        elif weights.exists():
            _refuse(out, f"{weights.name} is there without the .xml of a vidcls IR")
        return
    if out.is_file():
        _refuse(out, "it is a file; an OpenVINO directory --out holds model.xml and model.bin")
    if out.is_dir():
        from vidcls.zoo.openvino import IR_NAME

        ours = (IR_NAME, Path(IR_NAME).with_suffix(".bin").name)
        others = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if others:
            _refuse(out, f"the folder holds {', '.join(printable(n) for n in others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}")
        if (out / IR_NAME).exists():
            _must_be_export(out, out / IR_NAME, _ir_card)


def _check_place(out: Path, chosen: str) -> None:
    """Refuse a directory where a file goes (ONNX's FILE.onnx, an IR's FILE.xml and FILE.bin) and a folder
    this process cannot write in: found only when the checked file was renamed into place, each cost the
    whole export and ended as an internal error."""
    where = f"--out {printable(str(out))}"
    if chosen == "onnx" and out.is_dir():
        raise UsageError(f"{where} is a directory; an ONNX export is one .onnx file (an OpenVINO IR in a "
                         f"directory: --format openvino)")
    if chosen == "openvino" and out.suffix.lower() == ".xml":
        for path in (out, out.with_suffix(".bin")):
            if path.is_dir():
                raise UsageError(f"{where}{'' if path == out else f': {printable(str(path))}'} is a directory; an "
                                 f"OpenVINO IR is FILE.xml with FILE.bin beside it, or a directory named without .xml")
    if not out.is_dir():
        check_writable("--out", out)


def _onnx_card(path: Path) -> None:
    from vidcls.zoo.onnx import read_onnx_card

    read_onnx_card(path)


def _ir_card(path: Path) -> None:
    from vidcls.zoo.openvino import read_ir_card

    read_ir_card(path)


def _must_be_export(out: Path, file: Path, read_card: Callable[[Path], None]) -> None:
    try:
        read_card(file)
    except VidclsError as exc:
        if not str(exc).startswith(f"{file}: "):  # not about the file (its runtime is not installed): as it is
            raise
        _refuse(out, str(exc).removeprefix(f"{file}: "))


def _refuse(out: Path, why: str) -> None:
    raise UsageError(f"--out {printable(str(out))} exists and is not a vidcls export ({printable(why)}); "
                     f"remove it, or choose another --out")
