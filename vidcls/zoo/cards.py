"""The ModelCard of a model directory, whichever format it is in (vidcls's or transformers').

The one card reader: resolution, the catalog's shipped entries and training's checkpoints
all read a directory's card here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidcls.errors import VidclsError, printable
from vidcls.zoo.convert import PICKLE_NAME, PREPROCESSOR_NAME, card_from_transformers
from vidcls.zoo.convert import transformers as hf_format
from vidcls.zoo.modeldir import (
    CONFIG_NAME,
    LAST,
    WEIGHTS_NAME,
    ModelCard,
    config_context,
    read_json,
)

# ---------------------------------------------------------------- model directories


def read_card(directory: Path, recipe: dict[str, Any] | None = None, labels: list[str] | None = None) -> ModelCard:
    """The ModelCard of a model directory in vidcls or transformers format.

    recipe: models.yaml input options (frames, stride, views) for a transformers repository,
    whose config does not record how its clips were sampled; labels: the default label set of an
    X-CLIP repository (models.yaml's dataset), whose config holds none.
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise VidclsError(f"{printable(directory)}: no {CONFIG_NAME} (not a vidcls or transformers model directory)"
                          f"{_run_hint(directory)}")
    config = read_json(path)
    with config_context(directory):
        if not hf_format.is_transformers_config(config):
            return ModelCard.from_config(config, default_name=directory.name)
        pre_path = directory / PREPROCESSOR_NAME
        preprocessor = read_json(pre_path) if pre_path.is_file() else None
        return card_from_transformers(config, preprocessor, directory.name, recipe, labels)


def _run_hint(directory: Path) -> str:
    """For a training run stopped before its first best model: where its checkpoint is."""
    last = directory / LAST
    if not (last / CONFIG_NAME).is_file():
        return ""
    return (f"; it is a training run without a best model yet (stopped during its first epoch?): its latest "
            f"checkpoint is {last} (--model {last}), "
            f"or continue it with `vidcls train ... --output {directory} --resume`")


def pickle_only_message(ref: str) -> str:
    return (f"{ref} has no {WEIGHTS_NAME}; a pickle checkpoint ({PICKLE_NAME}) is never unpickled "
            f"implicitly: convert it once with `vidcls convert {ref} --family FAMILY --output DIR` "
            f"and use --model DIR")
