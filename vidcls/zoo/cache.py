"""The vidcls cache ($VIDCLS_HOME): the lock file of verified digests, downloads, conversions.

Every weight file vidcls downloads, from the Hub or from a plain URL, is trusted only once
its sha256 matches, in this order: the digest pinned in the zoo entry; else the digest
recorded in the lock file by an earlier verified download; else a checksum the source
itself publishes (the Hub's LFS sha256); else, on first download, none: the digest is then
recorded. A file that fails is removed, so it is neither used nor left looking valid.

The lock file is `$VIDCLS_HOME/lock.json` (default `~/.cache/vidcls/lock.json`, under
XDG_CACHE_HOME when set), keyed by a source id that names one immutable file:
`owner/repo@<commit>/<file>` for the Hub, the URL itself for a plain download (a URL has
no commit: a file changed behind it fails its recorded digest, which is the point). It
lives outside the Hub cache on purpose: wiping or swapping that cache must not wipe the
record it is checked against. Downloads from URLs go to `downloads/`, and pickle
checkpoints converted to vidcls model directories to `converted/<sha256 of the pickle>/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vidcls.errors import VidclsError
from vidcls.fileio import home, write_text_atomic

if TYPE_CHECKING:  # imported when a lock is taken: filelock's import is not every start's to pay
    from filelock import FileLock


def lock_path() -> Path:
    return home() / "lock.json"


def converted_dir(sha256: str) -> Path:
    """The vidcls model directory converted from the pickle checkpoint with this sha256.

    Keyed by the source's digest, so a changed upstream file is never mistaken for the old
    conversion, and a conversion once made needs neither the pickle nor the network again.
    """
    return home() / "converted" / sha256


def exclusive(key: str) -> FileLock:
    """A lock, across processes, for one cache job (a URL's download, a conversion): the
    ranks of a distributed run resolve the same model at the same time."""
    from filelock import FileLock

    path = home() / "locks" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Digest:
    """A sha256 a file must have, and where it comes from (for the failure message)."""

    sha256: str
    origin: str  # e.g. "the sha256 pinned in models.yaml", "the Hub's LFS checksum"


@dataclass(frozen=True)
class VerifiedFile:
    """A downloaded file whose sha256 was checked; `recorded`: first use, now in the lock file.

    For a pickle checkpoint kept converted, path is the conversion's safetensors file (the
    file to load) and key / sha256 still name the download it was made from.
    """

    path: Path
    key: str  # its source id in the lock file
    sha256: str
    recorded: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, key: str, *, label: str, pinned: Digest | None, upstream: Digest | None,
           remove: Callable[[Path], str], how_to_fetch: str) -> VerifiedFile:
    """Check a downloaded file against the digest it must have; `remove` it if it fails.

    key: the file's source id in the lock file; label: how messages name it; upstream: a
    checksum its source publishes, used only while the lock file has no record; remove:
    deletes the file and says what happened, for the message.
    """
    actual = file_sha256(path)
    lock = read_lock()
    if pinned is not None:
        expected = Digest(pinned.sha256.lower(), pinned.origin)
    elif key in lock:
        expected = Digest(lock[key], f"the sha256 recorded in {lock_path()}")
    else:  # first use: the source's own checksum if it has one, else nothing to compare with, only to record
        expected = upstream or Digest(actual, "")
    if actual != expected.sha256:
        raise VidclsError(f"{label} fails its checksum: sha256 {actual[:16]}... but {expected.origin} is "
                          f"{expected.sha256[:16]}...; {remove(Path(path))}; run `{how_to_fetch}` to fetch it "
                          f"again (if it fails again, the file at its source is not the one that was verified)")
    recorded = key not in lock
    if recorded:
        record_lock(key, actual)
    return VerifiedFile(Path(path), key, actual, recorded)


# ---------------------------------------------------------------- lock file


def read_lock() -> dict[str, str]:
    """The recorded digests, source id -> sha256; an unreadable lock is an error.

    Silently starting a fresh lock over a damaged one would quietly drop the protection.
    """
    path = lock_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VidclsError(f"lock file {path} is unreadable ({exc}); fix or delete it") from None
    return {str(k): str(v) for k, v in files.items()}


def record_lock(key: str, sha256: str) -> None:
    """Add one digest to the lock file, written to a temporary name and renamed into place
    (read, changed and written under a lock, so that concurrent downloads keep each other's records)."""
    with exclusive(str(lock_path())):
        files = read_lock()
        files[key] = sha256
        write_text_atomic(lock_path(), json.dumps({"version": 1, "files": dict(sorted(files.items()))},
                                                  indent=1) + "\n")
