"""The zoo's entries: the packaged models.yaml plus the user's VIDCLS_ZOO files, by name.

What each entry describes (its card, where its weights come from, a summary row for
`vidcls models`), read from the catalog alone: nothing here downloads.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidcls.zoo import entries as zoofile
from vidcls.zoo.labels import label_set
from vidcls.zoo.spec import InputSpec, input_defaults

if TYPE_CHECKING:  # a card's checks import torch; listing the zoo (zoo_rows) does not
    from vidcls.zoo.modeldir import ModelCard

# ---------------------------------------------------------------- models.yaml (+ VIDCLS_ZOO files)


def zoo_entries() -> dict[str, dict[str, Any]]:
    """The zoo's entries by name: the packaged models.yaml plus the VIDCLS_ZOO files (vidcls.zoo.entries)."""
    return zoofile.load().entries


def catalog_entry(name: str) -> dict[str, Any]:
    return zoo_entries()[name]


def zoo_origin(name: str) -> str:
    """Where a zoo entry is defined: "vidcls" (the packaged models.yaml) or the path of a VIDCLS_ZOO file."""
    return zoofile.load().origins.get(name, zoofile.SHIPPED)


def hub_weights(name: str) -> dict[str, Any] | None:
    """A zoo entry's Hub pin {repo, revision, filename, sha256}, or None if it has no Hub weights."""
    weights = catalog_entry(name).get("weights") or {}
    return weights if "repo" in weights else None


def url_weights(name: str) -> dict[str, Any] | None:
    """A zoo entry's URL source {url, layout, sha256}, or None if its weights are not at a URL."""
    weights = catalog_entry(name).get("weights") or {}
    return weights if "url" in weights else None


def zoo_card(name: str) -> ModelCard:
    """The card of a zoo entry, without touching the network.

    Entries that ship weights are read from their directory; Hub entries are described by
    models.yaml alone (their downloaded config.json is the authority once fetched); URL
    entries by models.yaml alone, always (the file holds tensors only), their labels by
    `labels:` or else the shipped label set named by `dataset:`.
    """
    from vidcls.models import family_class  # imports torch: the card is built to be used
    from vidcls.zoo.cards import read_card
    from vidcls.zoo.modeldir import ModelCard

    entry = catalog_entry(name)
    directory = entry_directory(name)
    if directory is not None:
        return read_card(directory)
    labels = entry.get("labels")
    reads_text = hasattr(family_class(entry["family"]), "set_labels")  # X-CLIP: its default label set
    if labels is None and (url_weights(name) is not None or (reads_text and entry.get("dataset"))):
        labels = label_set(entry["dataset"])
    return ModelCard(name=name, family=entry["family"], arch=dict(entry.get("arch", {})),
                     input=InputSpec.from_dict(entry.get("input", {})), labels=labels)


def entry_directory(name: str) -> Path | None:
    """The local directory holding a zoo entry's config and weights, or None if it has none."""
    weights = catalog_entry(name).get("weights") or {}
    if "package" in weights:
        return Path(str(resources.files("vidcls").joinpath("assets", weights["package"])))
    return None


def weights_source(name: str) -> str | None:
    """Human-readable origin of a zoo entry's weights, or None for an architecture only."""
    weights = catalog_entry(name).get("weights") or {}
    if "package" in weights:
        return f"package:{weights['package']}"
    if "repo" in weights:
        return f"hf://{weights['repo']}@{weights.get('revision', 'main')}"
    return weights.get("url")


def zoo_summary(name: str) -> dict[str, Any]:
    """One row of `vidcls models`: what a user needs to pick a model (read from models.yaml and a shipped
    model's config.json alone, without torch: no card is made, see zoo_card for the checked one)."""
    entry = catalog_entry(name)
    family, recipe = _family_and_input(name, entry)
    spec = {**input_defaults(), **recipe}
    published = entry.get("published") or {}
    return {"name": name, "family": family, "attention": entry["attention"],
            "frames": spec["frames"], "stride": spec["stride"], "size": spec["size"],
            "views": spec["clips"] * spec["crops"], "weights": weights_source(name),
            "labels": entry.get("dataset"), "top1": published.get("top1"), "top1_views": published.get("views"),
            "gmacs": published.get("gmacs"), "verified": entry.get("verified"), "zoo": zoo_origin(name),
            "description": entry.get("description", "")}


def list_models() -> list[dict[str, Any]]:
    """The zoo, one row per model name usable as a REF (what `vidcls models --json` prints; `vidcls.list_models`).

    Each row has name, family, attention (linear or quadratic), frames, stride, size, views,
    weights (where they come from: package:NAME, hf://OWNER/REPO@REV or a URL; None for an
    architecture without weights), labels (dataset name or None), top1, top1_views and gmacs
    as published, verified, zoo ("vidcls" or the VIDCLS_ZOO file) and description. Read without
    importing torch.
    """
    return [zoo_summary(name) for name in zoo_entries()]


def _family_and_input(name: str, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A zoo entry's family and input recipe as written: a shipped model directory's own config.json
    (vidcls format), else the entry's; any other directory through its checked card."""
    directory = entry_directory(name)
    if directory is None:
        return entry["family"], dict(entry.get("input") or {})
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("format") == "vidcls" and isinstance(config.get("input", {}), dict):
        return config["family"], dict(config.get("input") or {})
    card = zoo_card(name)
    return card.family, card.input.to_dict()


def with_weights() -> list[str]:
    """The zoo entries that come with trained weights (shipped, on the Hub or at a URL)."""
    return [name for name in zoo_entries() if weights_source(name) is not None]
