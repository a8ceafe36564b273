"""What the user named becomes the list of videos a run classifies, before anything is decoded.

Inputs are files, folders (searched for videos by extension), URLs that ffmpeg opens itself
(http(s)://, rtsp://, ...), `-` for a video on stdin, and `@LIST` files of one input per line.
Nothing here raises for one bad input: a folder that cannot be listed becomes a failed input
like a missing file, so the others are still classified.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vidcls.errors import UsageError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                              ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".gif",
                              ".y4m", ".mjpeg", ".mxf", ".vob", ".asf", ".f4v", ".h264", ".hevc"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
STDIN = "-"
MAX_STDIN_BYTES = 8 << 30  # a video piped in is copied to a file first (decoding seeks); at most this much
_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class VideoInput:
    """One video of a run: `name` is how results and errors call it (the path as found, the
    URL, or "-"), `source` what the decoder opens, `error` a reason known before decoding."""

    name: str
    source: str
    error: str | None = None


@dataclass
class InputList:
    """The videos of a run, in order, and the files in folders that were passed over."""

    videos: list[VideoInput]
    skipped: Counter[str] = field(default_factory=Counter)  # extension -> files not taken

    def skipped_note(self) -> str | None:
        """One line saying how many files in folders were not taken as videos, and which kinds."""
        if not self.skipped:
            return None
        total = sum(self.skipped.values())
        kinds = ", ".join(f"{ext or '(no extension)'} x{n}" for ext, n in self.skipped.most_common(5))
        more = ", ..." if len(self.skipped) > 5 else ""
        return f"skipped {total} file(s) in folders that are not videos by their extension ({kinds}{more})"


def _is_dir(path: Path) -> bool:
    """is_dir() that answers False where the path cannot even be looked at (a folder above it
    without permission): the decoder then reports it as that input's failure."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _walk(folder: Path, found: list[VideoInput], skipped: Counter[str],
          visited: set[tuple[int, int]] | None = None) -> None:
    """Videos below `folder`, sorted; an unreadable folder (the top one or below) is a failed input.

    Each folder is listed once, known by its device and inode: a symlink back to a folder above
    (or two folders linking to each other) would otherwise list the same videos again at every
    level, or never end."""
    visited = set() if visited is None else visited
    try:
        info = folder.stat()
        if (info.st_dev, info.st_ino) in visited:
            return
        visited.add((info.st_dev, info.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        found.append(VideoInput(str(folder), str(folder), f"cannot list folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if _is_dir(path):
            _walk(path, found, skipped, visited)
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(VideoInput(str(path), str(path)))
        else:
            skipped[path.suffix.lower()] += 1


def resolve_path(path: str, base: Path) -> Path:
    """A list entry as a path: absolute as written, relative to the list's folder otherwise."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _list_file(item: str) -> list[str]:
    """The inputs of an @LIST file: one per line, blank lines and # comments ignored; relative
    paths are relative to the list's folder (as in `train` list files)."""
    path = Path(item[1:]).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read input list {path}: {getattr(exc, 'strerror', None) or exc}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [e if is_url(e) else str(resolve_path(e, path.parent)) for e in entries]


def spool_stdin(directory: Path) -> VideoInput:
    """`-` as a video: stdin copied to a file (decoding seeks, and a pipe cannot), at most MAX_STDIN_BYTES
    of it (an endless or huge stream is refused as soon as it passes that, not once it is whole).

    Its first HEAD_BYTES are judged before anything is written: what ffmpeg refuses from those alone
    (random bytes, text, an archive, a picture) fails `-` at once, and the rest of stdin is never read."""
    from vidcls.video.probe import HEAD_BYTES, refusal_of_head  # PyAV, imported only when stdin is read:
    # listing the inputs imports neither av nor torch, so a bad command line is answered at once
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("input '-' reads a video from stdin, but stdin is a terminal; pipe a file in")
    stream = _Capped(sys.stdin.buffer, MAX_STDIN_BYTES)
    head = stream.read(HEAD_BYTES)
    reason = refusal_of_head(head) if len(head) == HEAD_BYTES else None  # a shorter stream is decoded whole
    if reason:
        return VideoInput(STDIN, STDIN, f"{reason} (judged from the first {HEAD_BYTES >> 20} MiB of stdin; "
                                        f"the rest was not read)")
    target = directory / "stdin-video"
    with target.open("wb") as out:
        out.write(head)
        shutil.copyfileobj(stream, out, 1 << 20)
    return VideoInput(STDIN, str(target))


class _Capped:
    """A binary stream that raises UsageError once more than `limit` bytes were read from it."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.left, self.limit = stream, limit, limit

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(min(size, self.left + 1) if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise UsageError(f"input '-': stdin holds more than {self.limit >> 20} MiB; save the video to a file "
                             f"and pass its path (a file is read in place, never copied)")
        return data


def is_url(source: str | Path) -> bool:
    """http(s)://, rtsp://, ... : opened by ffmpeg itself, never turned into a Path (file:// is a path)."""
    return isinstance(source, str) and bool(_URL.match(source)) and not source[:7].lower() == "file://"


def file_url_path(url: str) -> str | VideoInput:
    """The local path a file:// URL names (file:///x, file://localhost/x), read as any path is
    (a FIFO or device refused, not opened by ffmpeg's file protocol); another host is a failed input."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return VideoInput(url, url, f"file:// URL of another host ({parts.netloc}); give a local path")
    return urllib.request.url2pathname(parts.path)


class StdinSpool:
    """Where a video on stdin is kept while a run lasts: a private temporary folder, made only when
    `-` is among the inputs (a full or missing TMPDIR then costs nothing to runs without it), removed
    with what it holds when the run ends."""

    def __init__(self) -> None:
        self._folder: tempfile.TemporaryDirectory | None = None

    def directory(self) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="vidcls-stdin-")
        return Path(self._folder.name)

    def __enter__(self) -> StdinSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def _stdin_input(stdin_dir: Path | StdinSpool) -> VideoInput:
    """`-` as an input: stdin spooled to a file. A spool that cannot be written (a full or read-only
    TMPDIR) fails this input alone, as a file that cannot be read does; the partial copy is removed."""
    target = None
    try:
        folder = stdin_dir.directory() if isinstance(stdin_dir, StdinSpool) else stdin_dir
        target = folder / "stdin-video"
        return spool_stdin(folder)
    except OSError as exc:
        if target is not None:
            target.unlink(missing_ok=True)
        where = os.environ.get("TMPDIR") or tempfile.gettempdir()
        return VideoInput(STDIN, STDIN, f"cannot keep the video on stdin in {where} (TMPDIR): "
                                        f"{exc.strerror or exc}")


def gather(inputs: Iterable[str | Path], stdin_dir: Path | StdinSpool | None = None) -> InputList:
    """Expand the inputs: folders into the videos below them (sorted), @LIST files into their
    lines; files, URLs and missing paths are kept as given (a missing file is reported as a
    failed input, not dropped). `-` is spooled into stdin_dir (required when `-` is given); stdin
    holds one video, so `-` given twice is a UsageError."""
    found: list[VideoInput] = []
    skipped: Counter[str] = Counter()
    pending = [os.fspath(i) for i in inputs]
    pending.reverse()
    while pending:
        item = pending.pop()
        if item.startswith("@") and not Path(item).exists():
            pending.extend(reversed(_list_file(item)))
        elif item == STDIN:
            if stdin_dir is None:
                raise UsageError("input '-' (stdin) is not accepted here")
            if any(video.name == STDIN for video in found):
                raise UsageError("input '-' (stdin) is given twice; stdin holds one video: give it once")
            found.append(_stdin_input(stdin_dir))
        elif item[:7].lower() == "file://":
            local = file_url_path(item)
            found.append(local) if isinstance(local, VideoInput) else pending.append(local)
        elif is_url(item):
            found.append(VideoInput(item, item))
        elif _is_dir(Path(item)):
            _walk(Path(item), found, skipped)
        else:
            found.append(VideoInput(item, item))
    return InputList(found, skipped)


def stdin_directory() -> StdinSpool:
    """Where a video on stdin is spooled while a run lasts (StdinSpool: made only when needed)."""
    return StdinSpool()


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    match = _SHARD.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise UsageError(f"bad --shard {text!r}: use I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def take_shard(videos: Sequence[VideoInput], index: int, count: int) -> list[VideoInput]:
    """Every count-th video from position index: shards are disjoint, together complete, and
    stable for the same inputs (folders are listed sorted)."""
    return list(videos[index::count])
