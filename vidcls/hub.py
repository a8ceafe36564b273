"""Files from the Hugging Face Hub, verified: download into huggingface_hub's cache, check sha256.

Everything goes through `hf_hub_download`, so the Hub's own settings apply unchanged:
HF_HOME / HF_HUB_CACHE (where the cache is), HF_HUB_OFFLINE=1 (never touch the network),
HF_TOKEN (private and gated repositories).

A weight file is trusted only once its sha256 matches, in this order: the digest pinned
in models.yaml; else the digest recorded in the lock file by an earlier verified download;
else (first use) the Hub's own LFS checksum, which the cache stores as the blob's file
name, after which the digest is recorded in the lock file (a file stored outside LFS has
no such checksum and is recorded as first downloaded). A file that fails is deleted
from the cache (blob and snapshot link), so it is neither used nor left looking valid.

The lock file is `$VIDCLS_HOME/lock.json` (default `~/.cache/vidcls/lock.json`, under
XDG_CACHE_HOME when set). It lives outside the Hub cache on purpose: wiping or swapping
the cache must not wipe the record it is checked against. Keys name an immutable commit
(`owner/repo@<commit>/<file>`), so a branch that moves gets a new record, never a false alarm.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError, VidclsError, first_line
from .fileio import write_text_atomic

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubRef:
    """A repository on the Hub at a revision (branch, tag, PR ref or commit; None = main)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"hf://{self.repo}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class VerifiedFile:
    """A file in the Hub cache whose sha256 was checked; `recorded`: first use, now in the lock file."""

    path: Path
    commit: str
    sha256: str
    recorded: bool


def parse_hf_ref(ref: str) -> HubRef:
    """'hf://owner/repo@rev' -> HubRef('owner/repo', 'rev')."""
    body = ref.removeprefix("hf://")
    repo, _, revision = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UsageError(f"bad Hub reference {ref!r}; expected hf://OWNER/REPO[@REVISION]")
    return HubRef(repo, revision or None)


# ---------------------------------------------------------------- download


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class FileNotOnHub(VidclsError):
    """The repository exists but does not hold the file or the revision (callers may fall back)."""


class NotCached(VidclsError):
    """The file is not in the local Hub cache and the Hub cannot or may not be asked for it."""


PROBE_SECONDS = 3.0


@functools.cache
def unreachable(endpoint: str) -> str | None:
    """Why the Hub endpoint cannot be reached now, or None if a TCP connection to it opens.

    huggingface_hub retries a failed connection for about 50 s before giving up; one
    connection attempt of at most PROBE_SECONDS tells a machine without network at once.
    Behind a proxy the endpoint's own name may not resolve locally, so no probe is made.
    Asked once per process and endpoint.
    """
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme in urllib.request.getproxies() or not url.hostname:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_SECONDS).close()
    except socket.gaierror:
        return f"the name {url.hostname} does not resolve"
    except OSError as exc:
        return f"{url.hostname}:{port} does not answer ({exc.strerror or type(exc).__name__})"
    return None


def download(ref: HubRef, filename: str, *, how_to_fetch: str) -> Path:
    """One file of a Hub repository into the Hub cache (or found there); one-line errors.

    how_to_fetch: the command that would put the file in the cache, for the offline message.
    When the Hub cannot be reached the cache alone is used, at once, instead of retrying.
    """
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    # The cache remembers files the Hub answered 404 for; offline that is the only way to know.
    if try_to_load_from_cache(ref.repo, filename, revision=ref.revision) is _CACHED_NO_EXIST:
        raise FileNotOnHub(f"{ref}: the repository has no file {filename}")
    why = None if _offline() else unreachable(constants.ENDPOINT)
    try:
        return Path(hf_hub_download(ref.repo, filename, revision=ref.revision, local_files_only=why is not None))
    except LocalEntryNotFoundError:
        if why is not None:
            raise NotCached(f"{ref}: the network is unreachable ({why}) and {filename} is not in the local Hub "
                            f"cache ({_hub_cache()}); run `{how_to_fetch}` where the Hub is reachable, or set "
                            f"HF_HUB_OFFLINE=1 to work from the cache alone") from None
        if _offline():
            raise NotCached(f"{ref}: the model's files are not in the local Hub cache ({filename} missing "
                              f"from {_hub_cache()}) and HF_HUB_OFFLINE=1 forbids downloading them; fetch the "
                              f"weights with `{how_to_fetch}` where the Hub is reachable (HF_HUB_OFFLINE unset), "
                              f"or set HF_HOME to a cache that has them") from None
        raise NotCached(f"{ref}: the model's files are not in the local Hub cache ({filename} missing) and "
                          f"the Hub cannot be reached; check the network, or fetch the weights with "
                          f"`{how_to_fetch}` where the Hub is reachable") from None
    except GatedRepoError:
        raise VidclsError(f"{ref}: the repository is gated; accept its terms on huggingface.co and set "
                          f"HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise VidclsError(f"{ref}: no such repository on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise FileNotOnHub(f"{ref}: the repository has no revision {ref.revision!r}") from None
    except EntryNotFoundError:
        raise FileNotOnHub(f"{ref}: the repository has no file {filename}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise VidclsError(f"{ref}: downloading {filename} failed ({first_line(exc)})") from None


def download_optional(ref: HubRef, filename: str, *, how_to_fetch: str) -> Path | None:
    """Like `download`, but None when the repository lacks the file or, offline, the cache does.

    For side files such as preprocessor_config.json, whose absence has a sensible default.
    """
    try:
        return download(ref, filename, how_to_fetch=how_to_fetch)
    except FileNotOnHub:
        return None
    except VidclsError:
        if _offline():
            return None
        raise


def commit_of(path: Path) -> str:
    """The commit a cached file belongs to: the cache keeps it at snapshots/<commit>/<file>."""
    parts = Path(path).parts
    if "snapshots" not in parts:
        raise VidclsError(f"{path} is not inside a Hub cache snapshot")
    return parts[parts.index("snapshots") + 1]


def fetch_verified(ref: HubRef, filename: str, *, sha256: str | None = None, how_to_fetch: str) -> VerifiedFile:
    """Download a weight file and check its sha256 (pinned, locked, or the Hub's LFS checksum)."""
    path = download(ref, filename, how_to_fetch=how_to_fetch)
    return verify(path, ref, filename, pinned=sha256, how_to_fetch=how_to_fetch)


# ---------------------------------------------------------------- verification


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, ref: HubRef, filename: str, *, pinned: str | None, how_to_fetch: str) -> VerifiedFile:
    """Check a cached file against the digest it must have; remove it from the cache if it fails."""
    commit = commit_of(path)
    key = f"{ref.repo}@{commit}/{filename}"
    actual = file_sha256(path)
    lock = read_lock()
    blob = Path(path).resolve().name
    if pinned:
        expected, source = pinned.lower(), "the sha256 pinned in models.yaml"
    elif key in lock:
        expected, source = lock[key], f"the sha256 recorded in {lock_path()}"
    elif SHA256.fullmatch(blob):
        expected, source = blob, "the Hub's LFS checksum"
    else:  # not an LFS file: nothing to compare with on first use, only to record
        expected, source = actual, ""
    if actual != expected:
        removed = _evict(Path(path))
        raise VidclsError(f"{ref}: {filename} (commit {commit[:12]}) fails its checksum: sha256 {actual[:16]}... "
                          f"but {source} is {expected[:16]}...; {removed}; run `{how_to_fetch}` to fetch it again "
                          f"(if it fails again, the file on the Hub is not the one that was verified)")
    recorded = key not in lock
    if recorded:
        record_lock(key, actual)
    return VerifiedFile(Path(path), commit, actual, recorded)


def _evict(path: Path) -> str:
    """Delete a bad file from the cache (the blob and the snapshot link to it); say what happened."""
    try:
        blob = path.resolve()
        blob.unlink(missing_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
    except OSError as exc:
        return f"it could not be removed from the cache ({exc.strerror}): delete {path} by hand"
    return "the file was removed from the cache"


# ---------------------------------------------------------------- lock file


def lock_path() -> Path:
    """$VIDCLS_HOME/lock.json; VIDCLS_HOME defaults to $XDG_CACHE_HOME/vidcls or ~/.cache/vidcls."""
    home = os.environ.get("VIDCLS_HOME")
    if not home:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidcls"
    return Path(home) / "lock.json"


def read_lock() -> dict[str, str]:
    """The recorded digests, `owner/repo@commit/file` -> sha256; an unreadable lock is an error.

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
    """Add one digest to the lock file, written to a temporary name and renamed into place."""
    files = read_lock()
    files[key] = sha256
    write_text_atomic(lock_path(), json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=1) + "\n")
