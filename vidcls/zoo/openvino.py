"""Running an OpenVINO IR (`model.xml` + `model.bin`) as if it were a vidcls torch model.

An IR written by vidcls (`vidcls export --format openvino`, or a `--runtime openvino`
conversion in the cache) is self-describing: the model's card and the facts of its making
are stored in the IR's rt_info (`<rt_info><vidcls><card value=.../>`), as the ONNX export
stores them in its metadata, so `--model FILE.xml` needs nothing but the file and its .bin.

`OpenVinoModule` compiles the IR for the CPU on first call, with the thread count torch has
then (the engine sets it from `--threads` or the model's cost, so both runtimes follow the
same setting) and the precision the caller's autocast asks for (none: f32, the exact path;
bf16 autocast: OpenVINO's bf16, where the CPU has it, f32 where it has not). Compiled
blobs are kept in `$VIDCLS_HOME/openvino/compiled` (OpenVINO's CACHE_DIR, keyed by OpenVINO
itself on the model and the settings), so a second run skips the compilation.

openvino (and nncf, for int8 export) are the optional extra `vidcls[openvino]`; every entry
point here goes through `require` so that a missing package is one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.zoo import runtime
from vidcls.zoo.cache import home
from vidcls.zoo.modeldir import ModelCard
from vidcls.zoo.runtime import CPU

IR_NAME = "model.xml"  # the IR inside a directory (its weights: model.bin beside it)
CARD_KEY = ("vidcls", "card")  # rt_info path of the card's config.json, as JSON
EXPORT_KEY = ("vidcls", "export")  # rt_info path of how the IR was made (JSON: batch, quantize, parity, ...)
INSTALL_HINT = "pip install 'vidcls[openvino]' (openvino, nncf)"
# the caller's autocast dtype -> OpenVINO's INFERENCE_PRECISION_HINT (no autocast: f32)
PRECISION_HINTS = {torch.bfloat16: "bf16", torch.float16: "f16"}


def require(package: str = "openvino") -> Any:
    """Import one of the `vidcls[openvino]` packages, or say in one line what to install."""
    return runtime.require(package, "OpenVINO models", INSTALL_HINT)


def ir_file(ref: str | os.PathLike) -> Path | None:
    """The IR a REF names: a .xml file, or model.xml in a directory without torch weights."""
    return runtime.exported_file(ref, ".xml", IR_NAME)


def compiled_cache() -> Path:
    """OpenVINO's CACHE_DIR for compiled models: one for every IR (OpenVINO keys the blobs itself)."""
    return home() / "openvino" / "compiled"


def read_ir(path: Path) -> Any:
    """The ov.Model of an IR (its weights are mapped, not read); one line when it is not one."""
    ov = require()
    if not path.with_suffix(".bin").is_file():
        raise VidclsError(f"{path}: an OpenVINO IR needs its weights beside it ({path.with_suffix('.bin').name})")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for every kind of bad file
        raise VidclsError(f"{path}: not a readable OpenVINO IR ({first_line(exc)})") from None


def read_ir_card(path: Path) -> tuple[ModelCard, dict[str, Any]]:
    """(card, facts of its making) of an IR written by vidcls; any other IR is refused."""
    model = read_ir(path)
    if not model.has_rt_info(list(CARD_KEY)):
        raise VidclsError(f"{path}: an OpenVINO IR without a vidcls card (export it with `vidcls export`)")
    card = ModelCard.from_config(json.loads(model.get_rt_info(list(CARD_KEY)).astype(str)), default_name=path.stem)
    facts = model.get_rt_info(list(EXPORT_KEY)).astype(str) if model.has_rt_info(list(EXPORT_KEY)) else "{}"
    return card, json.loads(facts)


def save_ir(model: Any, path: Path, card: ModelCard, facts: dict[str, Any]) -> None:
    """Write an ov.Model as `path` (.xml) + its .bin, with the card and the facts in its rt_info.

    Weights are written as they are (openvino.save_model would halve fp32 weights to fp16 by
    default, which costs the fp32 parity).
    """
    ov = require()
    model.set_rt_info(json.dumps(card.to_config()), list(CARD_KEY))
    model.set_rt_info(json.dumps(facts), list(EXPORT_KEY))
    ov.save_model(model, str(path), compress_to_fp16=False)


def precision_hint() -> str:
    """OpenVINO's inference precision for the caller's autocast state (none: f32, the exact path)."""
    if not torch.is_autocast_enabled("cpu"):
        return "f32"
    return PRECISION_HINTS.get(torch.get_autocast_dtype("cpu"), "f32")


def check_device(device: torch.device) -> None:
    """OpenVINO runs here on the CPU (its GPU plugin is for Intel GPUs, not CUDA)."""
    if device.type != "cpu":
        raise UsageError(f"OpenVINO runs on the CPU; device {device} asked for: pass --device cpu "
                         f"(or --runtime torch to run on {device.type})")


class OpenVinoModule(runtime.RuntimeModule):
    """An OpenVINO IR called like a torch model: (B, 3, T, H, W) float tensor -> logits
    (vidcls.zoo.runtime.RuntimeModule).

    Compiled on first call for the CPU, once per (torch thread count, autocast precision)
    seen: `--threads` and `--precision` mean the same as for torch.
    """

    def __init__(self, path: Path, device: torch.device = CPU) -> None:
        check_device(device)
        super().__init__(device)
        self.path = Path(path)
        self.compiled: dict[tuple[int, str], Any] = {}

    def compiled_model(self) -> Any:
        """The compiled model for the current thread count and precision, compiled (or read from the cache) once."""
        key = (torch.get_num_threads(), precision_hint())
        if key not in self.compiled:
            ov = require()
            # threads not pinned to cores: decoding workers share the cores with the model, as they do with torch's
            config = {"INFERENCE_NUM_THREADS": key[0], "INFERENCE_PRECISION_HINT": key[1],
                      "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False, "CACHE_DIR": str(compiled_cache())}
            try:
                self.compiled[key] = ov.Core().compile_model(str(self.path), "CPU", config)
            except Exception as exc:  # noqa: BLE001 - OpenVINO's errors are RuntimeErrors with long texts
                raise VidclsError(f"{self.path}: OpenVINO cannot compile it ({first_line(exc)})") from None
        return self.compiled[key]

    def run(self, feed: np.ndarray) -> np.ndarray:
        return self.compiled_model()(feed)[0]
