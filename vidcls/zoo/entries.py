"""The zoo's entries: the shipped models.yaml plus the user's zoo files (VIDCLS_ZOO), checked on load.

`VIDCLS_ZOO=/path/a.yaml:/path/b.yaml` (separated like PATH) adds entries in the schema of
models.yaml; an entry replaces one of the same name from the shipped zoo or an earlier file.
This is how a lab publishes its own checkpoints (a `url` weight source and the
architecture, recipe and labels that go with it) without a release of vidcls. Every entry
is checked when the files are read, so a mistake names its file and entry at once instead
of surfacing as a shape error after a download.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.zoo.labels import label_sets
from vidcls.zoo.spec import InputSpec

# libyaml's safe loader when PyYAML was built with it: models.yaml parses in 20 ms instead of 220 ms,
# which every command that names a model pays at start
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ENV = "VIDCLS_ZOO"
SHIPPED = "vidcls"  # the origin of the entries of the packaged models.yaml
ATTENTION = ("linear", "quadratic")
# the authors' checkpoint layouts (vidcls.zoo.convert.AUTHOR_LAYOUTS, which imports torch) and the family each
# converts to, kept here so that reading the zoo does not import torch (tests/test_zoo_url.py keeps them equal)
AUTHOR_LAYOUT_FAMILIES = {"xvit": "xvit", "vidtr": "vidtr", "vidtr-compact": "vidtr-compact"}
LAYOUTS = (*AUTHOR_LAYOUT_FAMILIES, "transformers", "vidcls")  # what a `url` weight file may hold
SOURCES = ("package", "repo", "url")
# A zoo file is read whole and walked; these bound what it may cost (the shipped one: 20 KB, about 1,500 values).
MAX_BYTES = 4 << 20
MAX_NODES = 1_000_000


@dataclass(frozen=True)
class Zoo:
    """All entries by name, and where each comes from: SHIPPED or the zoo file defining it."""

    entries: dict[str, dict[str, Any]]
    origins: dict[str, str]

    def pinned_in(self, name: str) -> str:
        """The file a pinned sha256 of this entry is written in, for messages."""
        origin = self.origins[name]
        return "models.yaml" if origin == SHIPPED else origin


def user_files() -> list[Path]:
    """The files named by VIDCLS_ZOO, in order; empty items are skipped."""
    return [Path(item).expanduser() for item in os.environ.get(ENV, "").split(os.pathsep) if item]


def load() -> Zoo:
    """The shipped zoo merged with the user's files, read again only when a file changes."""
    stamps = []
    for path in user_files():
        try:
            stamps.append((str(path), path.stat().st_mtime_ns))
        except OSError as exc:
            raise UsageError(f"{ENV}: {path}: {exc.strerror}") from None
    return _merge(tuple(stamps))


@cache
def _merge(stamps: tuple[tuple[str, int], ...]) -> Zoo:
    text = resources.files("vidcls").joinpath("models.yaml").read_text()
    entries = _entries(text, SHIPPED)
    origins = dict.fromkeys(entries, SHIPPED)
    for path, _ in stamps:
        text = _read_zoo_file(Path(path))
        added = _entries(text, path)
        entries |= added
        origins |= dict.fromkeys(added, path)
    return Zoo(entries, origins)


def expanded_nodes(text: str) -> int:
    """How many nodes the YAML text holds once its aliases are expanded, counted from the event
    stream (no node is built): 700 bytes of anchors that each repeat the previous one nine times
    expand to billions of nodes, and whatever walks them (a JSON dump, a table) runs out of memory.
    Stops counting past MAX_NODES."""
    sizes: dict[str, int] = {}
    open_nodes: list[tuple[str | None, int]] = [(None, 0)]
    for event in yaml.parse(text, Loader=SAFE_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append((event.anchor, 1))
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        parent_anchor, parent_size = open_nodes[-1]
        open_nodes[-1] = (parent_anchor, parent_size + size)
        if parent_size + size > MAX_NODES:
            break
    return sum(size for _, size in open_nodes)


def _read_zoo_file(path: Path) -> str:
    """A user zoo file's text: at most MAX_BYTES of UTF-8; anything else is one line naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{ENV}: {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{ENV}: {path}: larger than {MAX_BYTES >> 20} MiB; a zoo file is a list of entries")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{ENV}: {path}: not UTF-8 text (byte {exc.start})") from None


def _entries(text: str, origin: str) -> dict[str, dict[str, Any]]:
    """The checked entries of one zoo file's text."""
    try:
        if expanded_nodes(text) > MAX_NODES:
            raise UsageError(f"{origin}: its aliases expand to more than {MAX_NODES:,} values (a YAML alias bomb?); "
                             f"a zoo file is a list of entries")
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise UsageError(f"{origin}: not a YAML file ({first_line(exc)})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise UsageError(f"{origin}: expected a mapping `models:` of entries by name, as in vidcls's models.yaml")
    for name, entry in models.items():
        # the shipped file is checked by the test suite (tests/test_zoo.py): reading it must not import
        # torch for the families' configs, so that `vidcls models` starts fast; a user's file is checked here
        problem = entry_problem(entry) if origin != SHIPPED else None
        if problem:
            raise UsageError(f"{origin}: model {name!r}: {problem}")
    return {str(name): entry for name, entry in models.items()}


def entry_problem(entry: Any) -> str | None:
    """What is wrong with one entry, or None."""
    if not isinstance(entry, dict):
        return "an entry is a mapping (family, attention, arch, input, weights, ...)"
    if entry.get("attention") not in ATTENTION:
        return f"attention must be one of {', '.join(ATTENTION)}"
    from vidcls.models import make_config  # the families' configs: imports torch

    try:
        make_config(entry.get("family"), entry.get("arch") or {})  # a known family, known options
        InputSpec.from_dict(entry.get("input") or {})
    except (VidclsError, TypeError, ValueError) as exc:
        return first_line(exc)
    weights = entry.get("weights")
    if weights is None:
        return None
    sources = [key for key in SOURCES if isinstance(weights, dict) and key in weights]
    if len(sources) != 1:
        return f"weights must be null or a mapping with one of {', '.join(SOURCES)}"
    size = weights.get("size")  # the download's bound (vidcls.zoo.bounded), from the Hub or a URL
    if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        return "weights size must be the file's size in bytes (an integer > 0) or absent"
    return url_problem(entry) if sources == ["url"] else None


def url_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with a `url` weight source: the file's layout must feed the entry's family,
    and the entry must describe it completely, since the file says nothing of its recipe or labels."""
    weights = entry["weights"]
    if urllib.parse.urlsplit(str(weights["url"])).scheme not in ("http", "https"):
        return f"weights url {weights['url']!r} is not an http(s) URL"
    layout = weights.get("layout")
    if layout not in LAYOUTS:
        return f"weights layout must be one of {', '.join(LAYOUTS)} (how the file's keys are named)"
    family = AUTHOR_LAYOUT_FAMILIES.get(layout)
    if family is not None and family != entry["family"]:
        return f"a checkpoint in the {layout} layout converts to family {family}, not {entry['family']}"
    digest = weights.get("sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdefABCDEF" for c in digest)):
        return "weights sha256 must be 64 hex digits or null"
    if not entry.get("arch") or not entry.get("input"):
        return "a url entry needs the arch and input recipe of its file"
    if entry.get("labels") is None and entry.get("dataset") not in label_sets():
        return f"a url entry needs `labels: [...]` or a shipped label set as `dataset:` ({', '.join(label_sets())})"
    return None
