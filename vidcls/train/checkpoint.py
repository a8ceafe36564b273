"""What a training run keeps in its output directory, written so that a crash never loses it.

    DIR/config.json, DIR/model.safetensors   the best weights so far (by val top-1): DIR is a
                                            vidcls model directory, `vidcls predict --model DIR`
    DIR/last/                               the latest state, replaced as a whole: config.json and
                                            model.safetensors (itself loadable) + trainer_state.pt
    DIR/metrics.jsonl, DIR/train.log        written by RunLog

trainer_state.pt holds only tensors, numbers, strings and containers of them (optimizer,
scheduler and grad-scaler state, RNG state, epoch and step), read back with
torch.load(weights_only=True): nothing in it is ever unpickled as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import UsageError, VidclsError
from ..errors import first_line
from ..fileio import atomic_directory, atomic_file
from ..modeldir import CONFIG_NAME, LAST, WEIGHTS_NAME, ModelCard, read_vidcls_card, write_config, write_weights
from .log import METRICS_NAME

STATE_NAME = "trainer_state.pt"


def write_model_files(directory: Path, card: ModelCard, module: nn.Module) -> None:
    """config.json + model.safetensors into an existing directory, each file replaced atomically.

    Unlike zoo.save_model_dir this leaves the rest of the directory alone (the run's logs
    and `last/` live next to the best weights).
    """
    with atomic_file(directory / CONFIG_NAME) as tmp:
        write_config(tmp, card)
    with atomic_file(directory / WEIGHTS_NAME) as tmp:
        write_weights(tmp, module)


def save_last(output: Path, card: ModelCard, module: nn.Module, state: dict[str, Any]) -> None:
    """Replace DIR/last as a whole: weights and trainer state always belong to the same step."""
    with atomic_directory(output / LAST) as tmp:
        write_model_files(tmp, card, module)
        torch.save(state, tmp / STATE_NAME)


def run_files(output: Path) -> list[str]:
    """What a previous run (or another model) left in `output` that a new run would overwrite.

    Anything else, such as the train.log of a run that stopped before its first epoch, may stay.
    """
    return [name for name in (CONFIG_NAME, WEIGHTS_NAME, LAST, METRICS_NAME) if (output / name).exists()]


def last_directory(output: Path) -> Path | None:
    """DIR/last, or the previous one that atomic_directory set aside if a crash hit between its renames."""
    for candidate in (output / LAST, output / f".{LAST}.old"):
        if (candidate / STATE_NAME).is_file():
            return candidate
    return None


def load_last(output: Path) -> tuple[ModelCard, dict[str, torch.Tensor], dict[str, Any]]:
    """(card, weights, trainer state) of the checkpoint to resume from."""
    directory = last_directory(output)
    if directory is None:
        raise UsageError(f"nothing to resume: {output} has no {LAST}/{STATE_NAME} "
                         f"(start a new run without --resume)")
    try:
        weights = load_file(str(directory / WEIGHTS_NAME))
        state = torch.load(directory / STATE_NAME, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise VidclsError(f"{directory}: unreadable checkpoint ({first_line(exc)})") from None
    return read_vidcls_card(directory), weights, state
