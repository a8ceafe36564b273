"""The class names of the public datasets the zoo's checkpoints were trained on.

A checkpoint's head carries only numbers; the names come from outside, and a list in the
wrong order mislabels every prediction without any error (the most reported failure of peer
tools). So the lists ship with the package, one file per dataset in vidcls/assets/labels,
named after models.yaml's `dataset:` values: one class name per line in the index order the
checkpoints were trained with, under a `#` header that says where the names and the order
come from and for which checkpoints the order is confirmed or only inferred.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from vidcls.errors import UsageError

if TYPE_CHECKING:  # importlib.resources.abc is new in Python 3.11; vidcls supports 3.10
    from importlib.resources.abc import Traversable

SUFFIX = ".txt"
COMMENT = "#"


def _directory() -> Traversable:
    """The packaged label directory (works from a wheel as well as from a checkout)."""
    return resources.files("vidcls").joinpath("assets", "labels")


def label_sets() -> list[str]:
    """The names of the shipped label sets, sorted: the `dataset:` values they can serve."""
    return sorted(entry.name.removesuffix(SUFFIX) for entry in _directory().iterdir()
                  if entry.name.endswith(SUFFIX))


def parse_labels(text: str) -> list[str]:
    """Class names from a label file's text: one per line, `#` lines are the source notes.

    Only comment lines are skipped; every other line is a class, so a stray blank line shows
    up as an empty name (which the tests reject) instead of silently shifting the indices.
    """
    return [line for line in text.splitlines() if not line.startswith(COMMENT)]


@cache
def _read(name: str) -> tuple[str, ...]:
    """The names of one shipped set, read once (a tuple, so the cache cannot be mutated)."""
    return tuple(parse_labels(_directory().joinpath(name + SUFFIX).read_text(encoding="utf-8")))


def label_set(name: str) -> list[str]:
    """The class names of dataset `name` (e.g. "kinetics-400"); entry i names logit i.

    Unknown names raise a one-line UsageError listing the known sets, since the name comes
    from a models.yaml entry or a user's flag, and a typo should say what would have worked.
    """
    if name not in label_sets():
        raise UsageError(f"unknown label set {name!r}; known label sets: {', '.join(label_sets())}")
    return list(_read(name))
