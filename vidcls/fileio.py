"""Atomic writes: every file and directory vidcls writes appears whole or not at all.

One place for the pattern (write under a temporary sibling name, then `os.replace` it onto
the target), so a crash, Ctrl-C or `kill -9` at any point leaves either the previous
version or the new one under the target's name, never a half-written file. The temporary
name starts with a dot and keeps the target's suffix, because some writers (PyAV's muxer,
matplotlib) choose the format from it. What appears gets the permissions of a plain `open()` or
`mkdir()` under the process's umask (or keeps those of the file it replaces), whatever the writer
or the temporary-name machinery used: safetensors creates its files 0600, mkdtemp 0700.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


def _sibling(target: Path, kind: str) -> Path:
    """A fresh hidden name next to `target`, unique per process and call, with the same suffix."""
    return target.with_name(f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}{target.suffix}")


def _umask() -> int:
    """The process's umask (read by setting it and back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _settle_mode(tmp: Path, target: Path, full: int) -> None:
    """Give `tmp` the mode `target` has, or, for a new target, `full` (0o666 or 0o777) less the umask."""
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else full & ~_umask()
    os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` when the block succeeds.

    The writer creates the file itself (any library that takes a path works); on failure the
    temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        _settle_mode(tmp, target, 0o666)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Replace a text file (UTF-8) atomically."""
    with atomic_file(target) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(target)


def leftovers(target: str | Path) -> list[Path]:
    """What atomic writes of `target` left beside it when a crash or `kill -9` cut them short:
    temporary files and directories, and the set-aside `.NAME.old` copy (a caller that can
    resume from that copy must restore it first). Safe to delete only when no writer is running."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir()
                  if p.name.startswith(f".{target.name}.") or
                  (p.name.startswith(f".{target.stem}.") and p.name.endswith(f".tmp{target.suffix}")))


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory renamed onto `target` when the block succeeds.

    An existing target is first moved aside to `.NAME.old` and deleted after the swap, so
    a crash between the two renames leaves that complete old copy (callers that resume
    from a directory look there too). A failure inside the block deletes the temporary one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _settle_mode(tmp, target, 0o777)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def home() -> Path:
    """$VIDCLS_HOME, where vidcls keeps its caches; defaults to $XDG_CACHE_HOME/vidcls or ~/.cache/vidcls."""
    path = os.environ.get("VIDCLS_HOME")
    if path:
        return Path(path)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidcls"


def memo(table: str, key: object, compute: Callable[[], float]) -> float:
    """compute(), remembered on disk across processes under `key` (any JSON-able description of what
    determines the value, e.g. a model's config and input shape).

    For counts that are exact but slow to take and only change with the model (its MACs, its largest
    activation): a command that starts many times, `vidcls predict` on one clip, pays for them once.
    The table is rewritten atomically; two processes racing only compute a value twice. A home that
    cannot be written to costs the speed-up, never the value.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = home() / "memo" / f"{table}.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        values = {}
    if not isinstance(values, dict):
        values = {}
    found = values.get(digest)
    if isinstance(found, (int, float)) and not isinstance(found, bool):
        return found
    value = compute()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({**values, digest: value}))
    return value


@contextlib.contextmanager
def atomic_files(*targets: str | Path) -> Iterator[list[Path]]:
    """Several files that belong together (an OpenVINO IR: model.xml names model.bin beside it).

    Yields one temporary path per target, each with its target's own name, in a hidden sibling
    directory; when the block succeeds they replace the targets, the last target (the one a
    reader opens: the .xml) removed first and renamed last, so a crash at any point leaves the
    old set, no last file (nothing to open), or the new set, never the new last file beside an
    old companion. A failure inside the block deletes the temporary ones.
    """
    paths = [Path(t) for t in targets]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{paths[-1].name}.", dir=paths[0].parent))
    try:
        yield [scratch / p.name for p in paths]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths[-1])
        for path in paths:
            os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
