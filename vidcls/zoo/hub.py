"""Files from the Hugging Face Hub, verified: download into huggingface_hub's cache, check sha256.

Everything goes through `hf_hub_download`, so the Hub's own settings apply unchanged:
HF_HOME / HF_HUB_CACHE (where the cache is), HF_HUB_OFFLINE=1 (never touch the network),
HF_TOKEN (private and gated repositories).

A weight file is trusted only once its sha256 matches (vidcls.zoo.cache.verify): the digest
pinned in models.yaml, else the one in the lock file, else, on first use, the Hub's own LFS
checksum, which the cache stores as the blob's file name (a file stored outside LFS has no
such checksum and is recorded as first downloaded). Its lock-file key names an immutable
commit (`owner/repo@<commit>/<file>`), so a branch that moves gets a new record, never a
false alarm. A file that fails is deleted from the cache (blob and snapshot link).
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vidcls.errors import UsageError, VidclsError, first_line
from vidcls.zoo.bounded import SIDE_FILE_BYTES, DownloadRefused, bounded_bar
from vidcls.zoo.cache import Digest, VerifiedFile
from vidcls.zoo.cache import verify as verify_digest

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubRef:
    """A repository on the Hub at a revision (branch, tag, PR ref or commit; None = main)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"hf://{self.repo}" + (f"@{self.revision}" if self.revision else "")


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


def offline() -> bool:
    """HF_HUB_OFFLINE=1: never touch the network (the Hub, and the URLs of zoo entries too)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class FileNotOnHub(VidclsError):
    """The repository exists but does not hold the file or the revision (callers may fall back)."""


class NotCached(VidclsError):
    """The file is not in the local Hub cache and the Hub cannot or may not be asked for it."""


PROBE_SECONDS = 3.0


@functools.cache
def unreachable(endpoint: str) -> str | None:
    """Why an endpoint (the Hub's, a download URL's scheme://host:port) cannot be reached now,
    or None if a TCP connection to it opens.

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


def download(ref: HubRef, filename: str, *, how_to_fetch: str, limit: int) -> Path:
    """One file of a Hub repository into the Hub cache (or found there); one-line errors.

    how_to_fetch: the command that would put the file in the cache, for the offline message.
    limit: the most bytes the file may have; the download is refused before its first byte when
    the Hub (or a mirror, a proxy) announces more, or more than the free disk space, and stopped
    when it streams past it (vidcls.zoo.bounded), its partial file deleted.
    When the Hub cannot be reached the cache alone is used, at once, instead of retrying.
    """
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # The cache remembers files the Hub answered 404 for; offline that is the only way to know.
    if try_to_load_from_cache(ref.repo, filename, revision=ref.revision) is _CACHED_NO_EXIST:
        raise FileNotOnHub(f"{ref}: the repository has no file {filename}")
    why = None if offline() else unreachable(constants.ENDPOINT)
    bar = bounded_bar(limit, Path(_hub_cache()), f"{ref}: {filename}")
    try:
        path = Path(hf_hub_download(ref.repo, filename, revision=ref.revision, local_files_only=why is not None,
                                    tqdm_class=bar))
    except DownloadRefused:
        _drop_partials(ref)
        raise
    except LocalEntryNotFoundError:
        if why is not None:
            raise NotCached(f"{ref}: the network is unreachable ({why}) and {filename} is not in the local Hub "
                            f"cache ({_hub_cache()}); run `{how_to_fetch}` where the Hub is reachable, or set "
                            f"HF_HUB_OFFLINE=1 to work from the cache alone") from None
        if offline():
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
    except Exception as exc:  # noqa: BLE001 - HfHubHTTPError, OSError, and its HTTP client's own (httpx2 today)
        raise VidclsError(f"{ref}: downloading {filename} failed ({first_line(exc)})") from None
    if bar.refused and path.stat().st_size > limit:  # raised in a transfer that went on (hf_xet)
        _evict(path)
        raise bar.refused[0]
    return path


def _drop_partials(ref: HubRef) -> None:
    """Delete the partial files of a repository's downloads that nobody is writing now.

    huggingface_hub writes a download to blobs/<etag>[.<id>].incomplete under the lock
    .locks/<repo>/<etag>.lock. From 1.18 on it names that file per download and deletes it when
    the download fails, but keeps for good the one of a download killed on the way (never resumed:
    the next download picks a new name); before 1.18 it keeps it and resumes it, so a refused
    partial would only be refused again. A partial whose lock is held belongs to a download under
    way (another process) and is left alone.
    """
    from filelock import FileLock, Timeout
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=ref.repo, repo_type="model")
    for partial in (Path(_hub_cache()) / folder / "blobs").glob("*.incomplete"):
        lock = Path(_hub_cache()) / ".locks" / folder / f"{partial.name.split('.')[0]}.lock"
        try:
            with FileLock(str(lock), timeout=0) if lock.parent.is_dir() else contextlib.nullcontext():
                partial.unlink(missing_ok=True)
        except Timeout:
            continue


def download_optional(ref: HubRef, filename: str, *, how_to_fetch: str,
                      limit: int = SIDE_FILE_BYTES) -> Path | None:
    """Like `download`, but None when the repository lacks the file or, offline, the cache does.

    For side files such as preprocessor_config.json, whose absence has a sensible default
    (bounded by SIDE_FILE_BYTES unless told otherwise).
    """
    try:
        return download(ref, filename, how_to_fetch=how_to_fetch, limit=limit)
    except FileNotOnHub:
        return None
    except VidclsError:
        if offline():
            return None
        raise


def commit_of(path: Path) -> str:
    """The commit a cached file belongs to: the cache keeps it at snapshots/<commit>/<file>."""
    parts = Path(path).parts
    if "snapshots" not in parts:
        raise VidclsError(f"{path} is not inside a Hub cache snapshot")
    return parts[parts.index("snapshots") + 1]


def fetch_verified(ref: HubRef, filename: str, *, sha256: str | None = None, how_to_fetch: str,
                   limit: int) -> VerifiedFile:
    """Download a weight file of at most `limit` bytes and check its sha256 (pinned, locked, or the
    Hub's LFS checksum)."""
    path = download(ref, filename, how_to_fetch=how_to_fetch, limit=limit)
    return verify(path, ref, filename, pinned=sha256, how_to_fetch=how_to_fetch)


# ---------------------------------------------------------------- verification


def verify(path: Path, ref: HubRef, filename: str, *, pinned: str | None, how_to_fetch: str) -> VerifiedFile:
    """Check a cached file against the digest it must have; remove it from the cache if it fails."""
    commit = commit_of(path)
    blob = Path(path).resolve().name
    return verify_digest(path, f"{ref.repo}@{commit}/{filename}", label=f"{ref}: {filename} (commit {commit[:12]})",
                         pinned=Digest(pinned, "the sha256 pinned in models.yaml") if pinned else None,
                         upstream=Digest(blob, "the Hub's LFS checksum") if SHA256.fullmatch(blob) else None,
                         remove=_evict, how_to_fetch=how_to_fetch)


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
