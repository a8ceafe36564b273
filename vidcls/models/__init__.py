"""Model registry: family name -> (config dataclass, model class).

A family is one module in this package that decorates its model class with
`@register("name")`; the class extends `base.VideoClassifier` (the interface every consumer
uses) and carries its config dataclass, an extension of `base.VideoConfig`, as `Config`.
Every module of the package is imported on first use, so adding a family needs no edit here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any

from vidcls.errors import UsageError, printable
from vidcls.models.base import VideoClassifier, VideoConfig
from vidcls.models.validate import check_fits, show

_FAMILIES: dict[str, type[VideoClassifier]] = {}


def register(name: str):
    """Class decorator that makes a model class buildable by family name from a config."""

    def add(cls: type[VideoClassifier]) -> type[VideoClassifier]:
        if not issubclass(cls, VideoClassifier):
            raise TypeError(f"{cls.__name__} must extend VideoClassifier")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and dataclasses.is_dataclass(config) and issubclass(config, VideoConfig)):
            raise TypeError(f"{cls.__name__} needs a dataclass attribute Config extending VideoConfig")
        _FAMILIES[name] = cls
        cls.family = name
        return cls

    return add


@functools.cache
def _discover() -> None:
    """Import every module of this package once, so each family registers itself.

    Runs even when some family was already imported directly (registry not empty).
    """
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def families() -> dict[str, type[VideoClassifier]]:
    """All registered families, importing the family modules once."""
    _discover()
    return dict(_FAMILIES)


def family_class(family: str) -> type[VideoClassifier]:
    """The model class of a registered family; an unknown name is a usage error listing the known ones."""
    cls = families().get(family) if isinstance(family, str) else None
    if cls is None:
        raise UsageError(f"unknown model family {show(family)}; known: {', '.join(sorted(families()))}")
    return cls


def make_config(family: str, arch: dict[str, Any]):
    """The family's config dataclass from a dict; unknown keys are an error, not ignored."""
    cls = family_class(family)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(map(str, set(arch) - fields))
    if unknown:
        raise UsageError(f"family {family!r} has no option(s) {printable(', '.join(unknown))}")
    return cls.Config(**arch)


def build_model(family: str, arch: dict[str, Any], frames: int | None = None,
                size: int | None = None) -> VideoClassifier:
    """A randomly initialised model of `family` with hyper-parameters `arch`.

    Built for real only once the config passed every check and a meta-device build showed it
    fits in this machine's memory with one view of frames x size (default: the config's
    num_frames x img_size), see vidcls.models.validate.check_fits.
    """
    cls, config = family_class(family), make_config(family, arch)
    check_fits(cls, config, frames or config.num_frames, size or config.img_size)
    return cls(config)
