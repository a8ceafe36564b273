"""What the exported-model runtimes (ONNX Runtime in `zoo.onnx`, OpenVINO in `zoo.openvino`) share.

Both are optional extras run behind a torch-shaped module: `RuntimeModule` takes the
(B, 3, T, H, W) float tensor predict, evaluate and benchmark feed any model and gives back
logits on the module's device, so no caller needs to know which runtime answers. Both
resolve a REF the same way (`exported_file`: the file, or a directory holding only the
exported file) and say in one line which extra is missing (`require`); their exporters and
converters are silenced alike (`quiet`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidcls.errors import UsageError, VidclsError

CPU = torch.device("cpu")  # where runtime modules run unless told otherwise


def require(package: str, what: str, hint: str) -> Any:
    """Import an optional package, or raise one line: `{what} need the optional package {package}: {hint}`."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise VidclsError(f"{what} need the optional package {package}: {hint}") from None


def exported_file(ref: str | os.PathLike, suffix: str, name: str) -> Path | None:
    """The exported file a REF names: the file itself (by `suffix`), or `name` in a directory without torch weights.

    A directory holding both model.safetensors and an exported file stays a torch model (what
    it meant before exports existed); name the exported file to run that instead.
    """
    from vidcls.zoo.modeldir import WEIGHTS_NAME

    path = Path(ref).expanduser()
    if path.suffix.lower() == suffix:
        if not path.is_file():
            raise UsageError(f"--model {ref}: no such file")
        return path
    if path.is_dir() and (path / name).is_file() and not (path / WEIGHTS_NAME).is_file():
        return path / name
    return None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence an exporter's, converter's or quantiser's chatter (progress prints on stdout, tracer
    warnings, warnings about torchvision and pre-processing, torch's own deprecations): stdout stays
    the command's output. Errors still surface as exceptions."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


class RuntimeModule(nn.Module):
    """A foreign runtime called like a torch model: (B, 3, T, H, W) float tensor -> logits.

    Subclasses implement `run` (a float32 numpy batch in host memory -> numpy logits). Inputs
    may be on any device (they are copied to host memory), and the logits come back on the
    module's device, so code written for torch models runs it unchanged. It is not a torch
    graph: torch.compile does not apply, and autocast only as the subclass reads it.
    """

    def __init__(self, device: torch.device = CPU) -> None:
        super().__init__()
        # An empty parameter: it carries the device (callers read next(module.parameters()).device)
        # and holds no weights.
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def run(self, feed: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        feed = video.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(feed)).to(self.anchor.device)
