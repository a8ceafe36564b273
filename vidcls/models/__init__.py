"""Model registry: family name -> (config dataclass, model class).

A family is one module in this package that decorates its model class with
`@register("name")`; the class carries its config dataclass as `Config`. Every module of
the package is imported on first use, so adding a family needs no edit here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any

from torch import nn

from ..errors import UsageError

_FAMILIES: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator that makes a model class buildable by family name from a config."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"{cls.__name__} needs a dataclass attribute Config")
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


def families() -> dict[str, type[nn.Module]]:
    """All registered families, importing the family modules once."""
    _discover()
    return dict(_FAMILIES)


def make_config(family: str, arch: dict[str, Any]):
    """The family's config dataclass from a dict; unknown keys are an error, not ignored."""
    cls = families().get(family)
    if cls is None:
        raise UsageError(f"unknown model family {family!r}; known: {', '.join(sorted(families()))}")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(arch) - fields)
    if unknown:
        raise UsageError(f"family {family!r} has no option(s) {', '.join(unknown)}")
    return cls.Config(**arch)


def build_model(family: str, arch: dict[str, Any]) -> nn.Module:
    """A randomly initialised model of `family` with hyper-parameters `arch`."""
    return families()[family](make_config(family, arch))
