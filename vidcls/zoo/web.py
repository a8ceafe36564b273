"""Files from plain HTTP(S) URLs into the vidcls cache: resumable, verified before use.

For weights published outside the Hub (the X-ViT and VidTr authors' pickles). The transfer
is huggingface_hub's own (`file_download.http_get`: its HTTP client, progress bar, retries
and Range requests), so its settings apply as for the Hub: HF_HUB_OFFLINE=1 never
downloads, HF_HUB_DOWNLOAD_TIMEOUT, HF_HUB_DISABLE_PROGRESS_BARS. No Hub token is sent.

A download goes to `$VIDCLS_HOME/downloads/<url digest>/<name>.partial`; an interrupted
one (Ctrl-C, a dropped connection) is resumed from the bytes already there by the next
call. Every download is bounded while it streams (vidcls.zoo.bounded): never past the file's expected
size (a zoo entry's `size`, else a bound from its architecture, at most MAX_BYTES), refused before
the first byte when the server's Content-Length is above that or above the free disk space, and a
partial that cannot be resumed (too large, the disk full) is deleted rather than kept.
The file gets its final name only after its sha256 was checked (cache.verify, keyed by the
URL); one that fails is deleted. Callers serialise fetches of one URL across processes with
`cache.exclusive(url)`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import urllib.parse
from pathlib import Path

from vidcls.errors import VidclsError, first_line
from vidcls.zoo import cache, hub
from vidcls.zoo.bounded import MAX_BYTES, DownloadRefused, bounded_bar
from vidcls.zoo.cache import Digest, VerifiedFile

PARTIAL = ".partial"
RANGE_NOT_SATISFIABLE = 416  # what a server answers a resume of a file already complete


def download_path(url: str) -> Path:
    """Where a URL's file is kept once verified: named as in the URL, in a folder per URL."""
    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    return cache.home() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch(url: str, *, pinned: Digest | None, how_to_fetch: str, size: int | None = None,
          limit: int = MAX_BYTES) -> VerifiedFile:
    """The verified file at `url`: downloaded (or resumed) unless a verified copy is kept.

    how_to_fetch: the command that fetches it, for the messages. size: the file's exact size when
    known (checked before its digest); limit: the most bytes it may have otherwise (at most MAX_BYTES).
    """
    target = download_path(url)
    if target.is_file():
        return _verify(target, url, pinned, how_to_fetch)
    partial = target.with_name(target.name + PARTIAL)
    _transfer(url, partial, how_to_fetch, size if size is not None else min(limit, MAX_BYTES))
    if size is not None and partial.stat().st_size != size:
        got = partial.stat().st_size
        partial.unlink()
        raise VidclsError(f"{url}: the download has {got:,} bytes, not the {size:,} its zoo entry names; "
                          f"it was deleted")
    verified = _verify(partial, url, pinned, how_to_fetch)
    os.replace(partial, target)
    return dataclasses.replace(verified, path=target)


def _verify(path: Path, url: str, pinned: Digest | None, how_to_fetch: str) -> VerifiedFile:
    return cache.verify(path, url, label=url, pinned=pinned, upstream=None, remove=_remove, how_to_fetch=how_to_fetch)


def _remove(path: Path) -> str:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        return f"it could not be removed ({exc.strerror}): delete {path} by hand"
    return "the download was deleted"


def _transfer(url: str, partial: Path, how_to_fetch: str, limit: int) -> None:
    """Append the rest of `url` to `partial` (resuming after the bytes it holds), with a progress bar,
    never past `limit` bytes.

    Fails at once, before any retry, when offline mode forbids it or the host cannot be reached.
    """
    from huggingface_hub.file_download import http_get

    if hub.offline():
        raise VidclsError(f"{url}: the file is not in the vidcls cache ({cache.home()}) and HF_HUB_OFFLINE=1 "
                          f"forbids downloading it; run `{how_to_fetch}` where the network is reachable "
                          f"(HF_HUB_OFFLINE unset)")
    parts = urllib.parse.urlsplit(url)
    why = hub.unreachable(f"{parts.scheme}://{parts.netloc}")
    if why is not None:
        raise VidclsError(f"{url}: the network is unreachable ({why}) and the file is not in the vidcls cache "
                          f"({cache.home()}); run `{how_to_fetch}` where it is reachable, or set HF_HUB_OFFLINE=1 "
                          f"to work from the cache alone")
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.exists() else 0
    if done > limit:  # kept by an older vidcls, or the entry's size changed: it cannot be resumed
        partial.unlink()
        done = 0
    with open(partial, "ab") as handle:
        try:
            http_get(url, handle, resume_size=done, displayed_filename=partial.name.removesuffix(PARTIAL),
                     tqdm_class=bounded_bar(limit, partial.parent, url))
        except Exception as exc:  # noqa: BLE001 - the HTTP stack raises many types (and other ones across versions)
            if done and _status(exc) == RANGE_NOT_SATISFIABLE:
                return  # the partial file is already whole: its digest decides
            handle.flush()
            kept = partial.stat().st_size
            if isinstance(exc, DownloadRefused) or getattr(exc, "errno", None) == errno.ENOSPC:
                partial.unlink()  # resuming would only repeat it
                raise (exc if isinstance(exc, DownloadRefused) else
                       VidclsError(f"{url}: download failed (the disk is full); the partial file was deleted")) \
                    from None
            if not kept:
                partial.unlink()
            resume = f"; {kept} bytes are kept in {partial}: run `{how_to_fetch}` to resume" if kept else ""
            raise VidclsError(f"{url}: download failed ({first_line(exc)}){resume}") from None


def _status(exc: Exception) -> int | None:
    """The HTTP status of a failed request, if the error carries its response."""
    return getattr(getattr(exc, "response", None), "status_code", None)
