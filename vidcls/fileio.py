"""Atomic writes: every file and directory vidcls writes appears whole or not at all.

One place for the pattern (write under a temporary sibling name, then `os.replace` it onto
the target), so a crash, Ctrl-C or `kill -9` at any point leaves either the previous
version or the new one under the target's name, never a half-written file. The temporary
name starts with a dot and keeps the target's suffix, because some writers (PyAV's muxer,
matplotlib) choose the format from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _sibling(target: Path, kind: str) -> Path:
    """A fresh hidden name next to `target`, unique per process and call, with the same suffix."""
    return target.with_name(f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}{target.suffix}")


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
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


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
