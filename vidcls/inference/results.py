"""Per-video results streamed to a file as they complete (`--output`), resumable, mergeable.

The format follows the suffix: .jsonl (one JSON object per line, predict --json's schema),
.json (the same objects as one array, one per line, so it stays readable line by line) or
.csv (video, label_1, score_1, ..., error). Every record is flushed when written, so Ctrl-C
or a killed process loses at most the line being written; reading back ignores such a
truncated last line (it is cut off and that video redone).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from vidcls.errors import UsageError
from vidcls.fileio import write_text_atomic

FORMATS = (".jsonl", ".json", ".csv")
Record = dict[str, Any]


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
    return ["video", *extra, *ranks, "error"]


def csv_row(record: Record, top_k: int, extra: Sequence[str] = ()) -> list[Any]:
    cells: list[Any] = [record["video"], *(record.get(e, "") for e in extra)]
    ranked = record.get("top_k") or []
    for r in range(top_k):
        cells += [ranked[r]["label"], ranked[r]["score"]] if r < len(ranked) else ["", ""]
    return [*cells, record.get("error") or ""]


def _csv_record(row: dict[str, str]) -> Record:
    """A CSV row back as a record with video, top_k (labels and scores) and error."""
    top_k = []
    rank = 1
    while row.get(f"label_{rank}"):
        top_k.append({"label": row[f"label_{rank}"], "score": float(row[f"score_{rank}"])})
        rank += 1
    fixed = {"video", "error"} | {k for k in row if k.startswith(("label_", "score_"))}
    return {**{k: v for k, v in row.items() if k not in fixed}, "video": row["video"], "top_k": top_k,
            "error": row.get("error") or None}


# ----------------------------------------------------------------------------- reading back


def _complete_text(path: Path) -> str:
    """The file's text up to its last complete line (a torn tail, from a run killed mid-write, is left out)."""
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1].decode("utf-8", errors="replace")


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


def _json_lines(text: str) -> Iterator[Record]:
    for line in text.splitlines():
        line = line.strip().lstrip("[,").rstrip("]").strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash and completed by a later run's first line
        if isinstance(record, dict) and "video" in record:
            yield record


def read_records(path: Path) -> list[Record]:
    """The complete records in an output file ([] when it does not exist)."""
    if not path.exists():
        return []
    try:
        text = _complete_text(path)
    except OSError as exc:
        raise UsageError(f"cannot read --output {path}: {exc.strerror or exc}") from None
    if output_format(path) == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [_csv_record(r) for r in rows if r.get("video") and None not in r.values()]
    return list(_json_lines(text))


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
        if resume:
            cut_torn_tail(path)
        existing = read_records(path) if resume else []
        self.count = len(existing)
        self.file: TextIO = self._open(existing)

    def _open(self, existing: list[Record]) -> TextIO:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == ".json" and existing:
                # reopen the array: rewrite its complete records (atomically) without the closing bracket
                write_text_atomic(self.path, "".join(self._json_line(r, i) for i, r in enumerate(existing)))
            file = self.path.open("a" if existing else "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UsageError(f"cannot write --output {self.path}: {exc.strerror or exc}") from None
        self.rows = csv.writer(file, lineterminator="\n")
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


def write_records(path: Path, records: Iterable[Record], top_k: int, extra: Sequence[str] = ()) -> None:
    """Write a whole output file at once (merging rank files), atomically."""
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
