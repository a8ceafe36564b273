"""Atomic writes: every file and directory vidcls writes appears whole or not at all.

One place for the pattern (write under a temporary sibling name, then `os.replace` it onto
the target), so a crash, Ctrl-C or `kill -9` at any point leaves either the previous
version or the new one under the target's name, never a half-written file. The temporary
name starts with a dot and keeps the target's suffix, because some writers (PyAV's muxer,
matplotlib) choose the format from it. What appears gets the permissions of a plain `open()` or
`mkdir()` under the process's umask (or keeps those of the file it replaces), whatever the writer
or the temporary-name machinery used: safetensors creates its files 0600, mkdtemp 0700.
A target that is a symbolic link stays one: the file it points to is replaced (written beside that
file, so the rename stays on one filesystem), never the link.

Also here: `append_whole` (a line appended whole or not at all), `write_failure` (why a write failed,
a full disk named as such), `single_writer`, which lets one process at a time write an output file (a second run
is refused naming the first's pid), and `file_digest`, a file's sha256 remembered across runs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from vidcls.errors import UsageError, first_line, printable

T = TypeVar("T")


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
    temporary file is removed and `target` is untouched. A symbolic link is written through
    (through_links): the file it names is replaced and the link stays.
    """
    target = through_links(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        _settle_mode(tmp, target, 0o666)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def through_links(target: str | Path) -> Path:
    """The path to write for `target`: the file a symbolic link (or a chain of them) points to,
    so that replacing it keeps the link; any other path as it is."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Replace a text file (UTF-8) atomically."""
    with atomic_file(target) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(target)


def append_whole(target: str | Path, text: str) -> None:
    """Append `text` (UTF-8) to a file, whole or not at all: a write cut short (a full disk) is cut back
    off before the error goes on, so a reader of lines (metrics.jsonl) never meets half of one."""
    with open(target, "ab", buffering=0) as file:
        start = file.seek(0, os.SEEK_END)
        data = memoryview(text.encode("utf-8", errors="backslashreplace"))
        try:
            while data:
                data = data[file.write(data):]
        except BaseException:
            file.truncate(start)
            raise


FULL_DISK = 1 << 20  # bytes free under which a failed write is put down to a full disk


def write_failure(exc: BaseException, where: str | Path) -> str:
    """Why a write under `where` failed, in a few words, a full disk named as such.

    torch.save loses the errno of a short write (its message is `[enforce fail at
    inline_container.cc:672] . unexpected pos 576 vs 534`) and safetensors wraps it in its own error;
    so besides ENOSPC, a failure on a filesystem with (almost) no space left is a full disk.
    Call it before the failed write's temporary files are removed: they hold the space it tells by.
    """
    if isinstance(exc, OSError) and exc.errno not in (None, errno.ENOSPC):
        return exc.strerror or first_line(exc)  # its own words: Disk quota exceeded, Permission denied, ...
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or _nearly_full(where):
        return f"the disk is full ({os.strerror(errno.ENOSPC)})"
    return first_line(exc)


def _nearly_full(where: str | Path) -> bool:
    try:
        return shutil.disk_usage(where).free < FULL_DISK
    except OSError:
        return False


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def memo(table: str, key: object, compute: Callable[[], T], valid: Callable[[object], bool] = _is_number) -> T:
    """compute(), remembered on disk across processes under `key` (any JSON-able description of what
    determines the value, e.g. a model's config and input shape).

    For values that are exact but slow to take and only change with what the key describes (a model's
    MACs, its largest activation, a file's digest): a command that starts many times, `vidcls predict`
    on one clip, pays for them once. A remembered value is used only if `valid` accepts it (the table is
    a file anyone could edit). The table is rewritten atomically; two processes racing only compute a
    value twice. A home that cannot be written to costs the speed-up, never the value.
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
    if valid(found):
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


# ----------------------------------------------------------------------------- one writer per output

_held: dict[str, int] = {}  # the outputs this process holds (single_writer is re-entrant per process)


@contextlib.contextmanager
def single_writer(target: str | Path, option: str = "--output") -> Iterator[None]:
    """Hold `target` for this process while a run writes it: another process asking for the same file
    (under any name: symbolic links are followed) is refused with a UsageError naming this one's pid,
    as `vidcls train` refuses a second run on its directory. Two writers would interleave or
    duplicate records while both report success.

    The lock is an OS lock (flock; filelock's where there is none), released when the process dies,
    even by kill -9, on `.NAME.lock` beside the file, which holds the holder's pid and is removed when
    the run ends (a killed run's is taken over by the next). Re-entrant within a process (the command
    line and the library it calls both hold it). A folder where the lock file cannot be created
    (read-only) is not locked: the writer itself then says what is wrong.
    """
    path = Path(os.path.realpath(target))
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        release = _lock(lock_path)
    except _Busy as busy:
        raise UsageError(f"{option} {printable(str(target))} is in use by another vidcls run (pid {busy.pid}); "
                         f"wait for it to end, or choose another {option}") from None
    except OSError:  # no lock where nothing can be created; the writer reports why
        yield
        return
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        release()


class _Busy(Exception):
    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = printable(pid.strip() or "unknown")


def _lock(lock_path: Path) -> Callable[[], None]:
    """Take the lock file (raising _Busy with the holder's pid), write this process's pid in it;
    returns what lets it go."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: filelock's lock, whose file stays
        return _filelock(lock_path)
    for _ in range(100):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", errors="replace")
            os.close(fd)
            raise _Busy(holder) from None
        except OSError:
            os.close(fd)
            raise
        try:  # the path may no longer name what we locked: its holder removed it as it let go
            here, there = os.fstat(fd), os.stat(lock_path)
            if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:  # pragma: no cover - a hundred holders in a row
        raise OSError("the lock file kept changing")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())

    def release() -> None:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # while still held: a process waiting on this file then finds it gone
        os.close(fd)

    return release


def _filelock(lock_path: Path) -> Callable[[], None]:  # pragma: no cover - Windows
    pid_path = lock_path.with_suffix(".pid")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            raise _Busy(pid_path.read_text(encoding="utf-8", errors="replace")) from None
        except OSError:
            raise _Busy("") from None
    with contextlib.suppress(OSError):
        write_text_atomic(pid_path, f"{os.getpid()}\n")

    def release() -> None:
        with contextlib.suppress(OSError):
            pid_path.unlink()
        lock.release()

    return release


def file_digest(path: str | Path) -> str:
    """The sha256 of a file, remembered across runs under $VIDCLS_HOME keyed by the file's identity
    (real path, device, inode, size, modification time in ns): a model's weights are hashed once,
    not on every run that records which weights made its results."""
    path = Path(os.path.realpath(path))
    info = path.stat()

    def sha256() -> str:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    return memo("file_sha256", [str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns], sha256,
                valid=lambda value: isinstance(value, str) and len(value) == 64)
