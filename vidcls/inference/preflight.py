"""What a run can refuse before anything heavy is imported or loaded: torch-free on purpose.

`vidcls predict` refuses a bad --output, --shard or --resume, an input list that holds no
video, and inputs that are all missing files, in the time Python takes to start, not after
torch, PyAV and the model are loaded (seconds). predict_run calls the same checks, so the
library refuses exactly what the command line does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidcls.errors import UsageError
from vidcls.fileio import single_writer
from vidcls.inference.results import FORMATS, Record, output_format, rank_path, read_records
from vidcls.video.inputs import STDIN, gather, is_url, parse_shard


@dataclass(frozen=True)
class Placement:
    """Which part of the inputs this process classifies and where its results go."""

    rank: int = 0
    world_size: int = 1
    torchrun: bool = False

    @classmethod
    def of(cls, shard: str | None) -> Placement:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            if shard is not None:
                raise UsageError("--shard is chosen by torchrun itself (each rank takes RANK/WORLD_SIZE); drop --shard")
            return cls(int(os.environ.get("RANK", "0")), world, torchrun=True)
        if shard is None:
            return cls()
        index, count = parse_shard(shard)
        return cls(index, count)


def done_records(output: Path | None, place: Placement, resume: bool,
                 records: Callable[[Path], Path] = lambda file: file) -> list[Record]:
    """The records already in --output (and, under torchrun, this rank's file); `records` names the
    file that holds a file's records (embed's .npy: its index). Without resume, either existing is refused."""
    if output is None:
        if resume:
            raise UsageError("--resume continues an --output file; give --output FILE")
        return []
    files = [output, rank_path(output, place.rank)] if place.torchrun else [output]
    if not resume:
        for file in files:
            if any(f.exists() and f.stat().st_size for f in (file, records(file))):
                raise UsageError(f"--output {file} already exists: add --resume to continue it, "
                                 "or remove it to start over")
        return []
    return [record for file in files for record in read_records(records(file), strict=True)]


@contextlib.contextmanager
def writing(output: Path | None, place: Placement) -> Iterator[None]:
    """Hold the files this process writes for the whole run (fileio.single_writer): --output, or under
    torchrun its rank file (and rank 0, which merges them, --output too). A second run on the same
    file is a UsageError naming the first's pid, before anything is read or written."""
    with contextlib.ExitStack() as stack:
        if output is not None:
            files = [output] if not place.torchrun else [rank_path(output, place.rank)] + [output] * (place.rank == 0)
            for file in files:
                stack.enter_context(single_writer(file))
        yield


def checked_output(output: str | Path | None, formats: Sequence[str] = FORMATS) -> Path | None:
    """--output as a Path whose suffix names a format we write (refused before any work)."""
    if output is None:
        return None
    output_format(Path(output), formats)
    try:  # a name too long, or a folder without access, is refused here rather than after the run
        is_dir = Path(output).is_dir()
    except OSError as exc:
        raise UsageError(f"--output {output}: {exc.strerror or exc}") from None
    if is_dir:
        raise UsageError(f"--output {output} is a directory; name a file ({', '.join(formats)})")
    return Path(output)


def missing_inputs(videos: list[str]) -> list[str] | None:
    """The inputs, when every one of them is a file that does not exist (nothing to load a model
    for: each is reported as a failed input straight away); None when any may hold a video.
    Raises UsageError when the inputs hold no video at all (an empty folder)."""
    if videos.count(STDIN) > 1:
        raise UsageError("input '-' (stdin) is given twice; stdin holds one video: give it once")
    if any(v == STDIN or is_url(v) or v.startswith("@") for v in videos):
        return None
    found = gather(videos)
    if not found.videos:
        raise UsageError("no video files found in the given paths"
                         + (f" ({found.skipped_note()})" if found.skipped else ""))
    names = [v.name for v in found.videos]
    return names if all(map(_not_found, names)) else None


def _not_found(path: str) -> bool:
    """Whether nothing is at `path` (a path that cannot be looked at is not 'missing': its error is its own)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def preflight(videos: list[str], output: str | Path | None, resume: bool, shard: str | None) -> list[str] | None:
    """Every refusal that needs neither torch nor the model; returns missing_inputs(videos)."""
    place = Placement.of(shard)
    done_records(checked_output(output), place, resume)
    return missing_inputs(videos)
