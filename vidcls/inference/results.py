"""Per-video results streamed to a file as they complete (`--output`), resumable, mergeable.

The format follows the suffix: .jsonl (one JSON object per line, predict --json's schema),
.json (the same objects as one array, one per line, so it stays readable line by line) or
.csv (video, label_1, score_1, ..., error, model, run). Every record is flushed when written, so
Ctrl-C or a killed process loses at most the line being written; reading back ignores such a
truncated last line (it is cut off and that video redone).

Every record carries `run`: what its numbers mean (the model and the sha256 of its card and
weights, top-k, the clip recipe, the timeline's windows; RUN_KEYS). A resume whose run differs
is refused naming the difference (check_same_run), and a file that is not vidcls records is
never continued (read_records(strict=True)): appending would mix two runs' results in one file,
and continuing a .json array rewrites its end. A file is changed only where it grows: resuming
appends to it in place (the same inode, so a symbolic link stays one and its target is written).
File names are not always UTF-8: they are written and read back with surrogateescape, so a
name's bytes survive a CSV round trip exactly and --resume recognises it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from vidcls.errors import UsageError, printable
from vidcls.fileio import through_links

FORMATS = (".jsonl", ".json", ".csv")
Record = dict[str, Any]
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}  # file names are bytes; keep them exact
# What a run's records mean: two runs that differ in any of these must not share a file.
RUN_KEYS = ("model", "model_sha256", "top_k", "frames", "stride", "sampling", "clips", "crops", "timeline")
CSV_TAIL = ("error", "model", "run")  # the last CSV columns (model and the run as compact JSON)


def output_format(path: Path, formats: Sequence[str] = FORMATS) -> str:
    """The format of an output file, from its suffix (a rank file `X.jsonl.rank1` is X.jsonl's),
    one of `formats` (embed's differ: vidcls.inference.vectors)."""
    suffix = Path(re.sub(r"\.rank\d+$", "", path.name)).suffix.lower()
    if suffix not in formats:
        raise UsageError(f"--output {path}: unknown format {suffix or '(no suffix)'}; use one of {', '.join(formats)}")
    return suffix


# ----------------------------------------------------------------------------- CSV rows


def csv_header(top_k: int, extra: Sequence[str] = ()) -> list[str]:
    ranks = [f"{what}_{r}" for r in range(1, top_k + 1) for what in ("label", "score")]
    return ["video", *extra, *ranks, *CSV_TAIL]


def csv_row(record: Record, top_k: int, extra: Sequence[str] = ()) -> list[Any]:
    cells: list[Any] = [record["video"], *(record.get(e, "") for e in extra)]
    ranked = record.get("top_k") or []
    for r in range(top_k):
        cells += [ranked[r]["label"], ranked[r]["score"]] if r < len(ranked) else ["", ""]
    run = record.get("run")
    return [*cells, record.get("error") or "", record.get("model") or "",
            json.dumps(run, sort_keys=True, separators=(",", ":")) if run is not None else ""]


def _csv_record(row: dict[str, str]) -> Record:
    """A CSV row back as a record with video, top_k (labels and scores), error, model and run."""
    top_k = []
    rank = 1
    while row.get(f"label_{rank}"):
        top_k.append({"label": row[f"label_{rank}"], "score": float(row[f"score_{rank}"])})
        rank += 1
    fixed = {"video", "error", "run"} | {k for k in row if k.startswith(("label_", "score_"))}
    record = {**{k: v for k, v in row.items() if k not in fixed}, "video": row["video"], "top_k": top_k,
              "error": row.get("error") or None}
    if row.get("run"):
        with contextlib.suppress(ValueError):
            record["run"] = json.loads(row["run"])
    return record


# ----------------------------------------------------------------------------- reading back


def _complete_text(path: Path) -> str:
    """The file's text up to its last complete line (a torn tail, from a run killed mid-write, is left out)."""
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1].decode(**ENCODING)


def cut_torn_tail(path: Path) -> None:
    """Truncate a torn last line off the file, so that appending continues from a clean line.
    Only a writer about to resume calls this; reading never changes a file."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)


def not_records(path: Path, why: str) -> UsageError:
    """The refusal to continue a file that vidcls did not write (resuming would append to it, and
    continuing a .json array rewrites its end)."""
    return UsageError(f"--output {printable(str(path))} is not a file of vidcls results ({why}); --resume continues "
                      f"only a file a vidcls run wrote: choose another --output")


def _json_lines(text: str, path: Path, strict: bool) -> Iterator[Record]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("[,").rstrip("]").strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if strict:
                raise not_records(path, f"line {number} is not one JSON object") from None
            continue  # a line torn by a crash and completed by a later run's first line (older files)
        if isinstance(record, dict) and isinstance(record.get("video"), str):
            yield record
        elif strict:
            raise not_records(path, f"line {number} is not a record with a video")


def _csv_lines(text: str, path: Path, strict: bool) -> Iterator[Record]:
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        return
    if strict and (header[:1] != ["video"] or tuple(header[-len(CSV_TAIL):]) != CSV_TAIL):
        raise not_records(path, "its header is not video, ..., error, model, run")
    for number, row in enumerate(rows, 2):
        if len(row) != len(header) or not row[0]:
            if strict and row:
                raise not_records(path, f"line {number} has {len(row)} cells, its header {len(header)}")
            continue
        yield _csv_record(dict(zip(header, row, strict=True)))


def read_records(path: Path, strict: bool = False) -> list[Record]:
    """The complete records in an output file ([] when it does not exist). strict (what --resume
    reads): a line that is not a record (other than a torn last line) is a UsageError, not skipped."""
    if not path.exists():
        return []
    try:
        text = _complete_text(path)
    except OSError as exc:
        raise UsageError(f"cannot read --output {printable(str(path))}: {exc.strerror or exc}") from None
    lines = _csv_lines if output_format(path) == ".csv" else _json_lines
    return list(lines(text, path, strict))


def check_same_run(done: Iterable[Record], run: dict[str, Any], output: Path | None) -> None:
    """Refuse to continue `output` when its records were made by another run (another model or its
    weights, top-k, clip recipe or timeline; RUN_KEYS): the file would mix results that do not mean
    the same thing. Records without a run (written before vidcls recorded it) are refused too."""
    ours = json.loads(json.dumps(run))
    for record in done:
        theirs = record.get("run")
        if not isinstance(theirs, dict):
            raise UsageError(f"--output {printable(str(output))} holds {printable(record['video'])} without the "
                             f"settings of the run that made it (written by an older vidcls?); it cannot be "
                             f"continued: choose another --output")
        changed = [f"{key} {_shown(theirs.get(key))} (this run: {_shown(ours.get(key))})"
                   for key in RUN_KEYS if theirs.get(key) != ours.get(key)]
        if changed:
            raise UsageError(f"--output {printable(str(output))} holds results of another run: "
                             f"{'; '.join(changed)}; resume with the same settings, or choose another --output")


def _shown(value: Any) -> str:
    """A run setting in a message: a digest by its first 12 digits, anything else as JSON."""
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return printable(json.dumps(value) if not isinstance(value, str) else value)


# ----------------------------------------------------------------------------- writing


class ResultWriter:
    """Appends one record per video to `path` and flushes it.

    With resume=False an existing file is replaced; with resume=True new records are appended
    after the complete ones already there. A .json array is closed by close() (also on
    Ctrl-C, since callers use it as a context manager); a .json file left open by a killed run
    is still read back by read_records and closed by the next run.
    """

    def __init__(self, path: Path, top_k: int, resume: bool = False, extra: Sequence[str] = ()) -> None:
        self.path, self.top_k, self.extra = path, top_k, tuple(extra)
        self.format = output_format(path)
        existing = read_records(path, strict=True) if resume else []  # refused before anything is cut
        if resume:
            cut_torn_tail(path)
        self.count = len(existing)
        self.file: TextIO = self._open(existing)

    def _open(self, existing: list[Record]) -> TextIO:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == ".json" and existing:
                reopen_array(self.path)
            file = self.path.open("a" if existing else "w", newline="", **ENCODING)
        except OSError as exc:
            raise UsageError(f"cannot write --output {printable(str(self.path))}: {exc.strerror or exc}") from None
        # CSV's own line ends (RFC 4180, \r\n): the writer then quotes a field holding a carriage return
        # (a file name may), which with \n line ends it writes bare, and a reader takes for a line end
        self.rows = csv.writer(file, lineterminator="\r\n")
        if self.format == ".csv" and not existing:
            self.rows.writerow(csv_header(self.top_k, self.extra))
            file.flush()
        return file

    @staticmethod
    def _json_line(record: Record, position: int) -> str:
        return ("[" if position == 0 else ",") + json.dumps(record) + "\n"

    def write(self, record: Record) -> None:
        if self.format == ".csv":
            self.rows.writerow(csv_row(record, self.top_k, self.extra))
        elif self.format == ".json":
            self.file.write(self._json_line(record, self.count))
        else:
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.count += 1

    def close(self) -> None:
        if self.file.closed:
            return
        if self.format == ".json":
            self.file.write("]\n" if self.count else "[]\n")
        self.file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reopen_array(path: Path) -> None:
    """Open a .json array again for appending, in place: cut its closing `]` line (a run that was
    killed left none). The file keeps its inode, so a symbolic link to it stays one."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    if data[start:].strip() in (b"]", b"[]"):
        with path.open("r+b") as f:
            f.truncate(start)


def write_records(path: Path, records: Iterable[Record], top_k: int, extra: Sequence[str] = ()) -> None:
    """Write a whole output file at once (merging rank files), atomically (a symbolic link stays one)."""
    path = through_links(path)
    temporary = path.with_name(f".{path.name}.merging{Path(path.name).suffix}")
    with ResultWriter(temporary, top_k, extra=extra) as writer:
        for record in records:
            writer.write(record)
    os.replace(temporary, path)


def rank_path(path: Path, rank: int) -> Path:
    """The file one torchrun process writes before rank 0 merges them: FILE.rankR."""
    return path.with_name(f"{path.name}.rank{rank}")


def merge(path: Path, world_size: int, order: Sequence[str], top_k: int, extra: Sequence[str] = ()) -> int:
    """Merge FILE (earlier results, if any) and FILE.rank0..N-1 into FILE, in input order
    (`order`: the video names), each video once; the rank files are then removed.
    Returns the number of records written."""
    by_video: dict[str, Record] = {}
    parts = [path] + [rank_path(path, r) for r in range(world_size)]
    for part in parts:
        for record in read_records(part):
            by_video.setdefault(record["video"], record)
    position = {name: i for i, name in enumerate(order)}
    records = sorted(by_video.values(), key=lambda r: position.get(r["video"], len(position)))
    write_records(path, records, top_k, extra)
    for part in parts[1:]:
        part.unlink(missing_ok=True)
    return len(records)
