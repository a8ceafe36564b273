"""Embedding output files (`vidcls embed --output`): streamed, resumable, mergeable, like predict's.

.jsonl / .json are results.py's files, each record carrying its `embedding` as nested lists.
.npy writes two files: FILE.npy, every vector as a float32 row (rows, dim), and FILE.index.jsonl,
one record per video with `row` (its first row; null when it failed) and `rows` (how many) in
place of the list. `numpy.load(FILE.npy, mmap_mode="r")` and `pandas.read_json(FILE.index.jsonl,
lines=True)` open them as they are.

Why .npy plus an index rather than Parquet: numpy is already a dependency (pyarrow would be a
new one); a row has a fixed size, so the file grows by appending and its fixed 128-byte header,
rewritten after each video, always counts the rows written: a killed run leaves a file numpy
reads, and --resume cuts it back to the rows its index names, whereas a Parquet file is
unreadable until its footer is written at close; and a memory-mapped .npy serves a data set
larger than memory. For one video the rows are written, then the header, then the index line,
each flushed: an index line's rows are always in the file.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidcls.errors import UsageError, VidclsError
from vidcls.inference.embed import Embedding
from vidcls.inference.results import Record, ResultWriter, merge, output_format, rank_path, read_records

FORMATS = (".jsonl", ".json", ".npy")
HEADER_BYTES = 128  # a .npy version 1.0 header, padded: room for any (rows, dim) up to 10^12 rows
ROW_DTYPE = np.dtype("<f4")


def vectors_format(path: Path) -> str:
    """.jsonl, .json or .npy, from the suffix (a rank file's is its output's); anything else is a UsageError."""
    return output_format(path, FORMATS)


def index_path(path: Path) -> Path:
    """FILE.npy -> FILE.index.jsonl; torchrun's FILE.npy.rankR -> FILE.index.jsonl.rankR."""
    match = re.fullmatch(r"(.*)\.npy(\.rank\d+)?", path.name, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"{path} is not a .npy path")
    return path.with_name(f"{match[1]}.index.jsonl{match[2] or ''}")


def records_path(path: Path) -> Path:
    """Where the records of an embed output are (what resume reads): the index for .npy, else the file."""
    return index_path(path) if vectors_format(path) == ".npy" else path


def npy_header(rows: int, dim: int) -> bytes:
    """The header of a (rows, dim) little-endian float32 .npy file, always HEADER_BYTES long."""
    text = repr({"descr": ROW_DTYPE.str, "fortran_order": False, "shape": (rows, dim)})
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER_BYTES - 10) + text.ljust(HEADER_BYTES - 11).encode() + b"\n"


class NpyRows:
    """A float32 (rows, dim) .npy file grown by appending rows; its header always counts them.

    keep=None starts the file anew; keep=N continues an existing one (resume) with its first N
    rows, cutting off rows written after the last index line of a killed run.
    """

    def __init__(self, path: Path, dim: int, keep: int | None = None) -> None:
        self.path, self.dim = path, dim
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if keep is not None and path.exists():
                self.file: BinaryIO = path.open("r+b")
                self.rows = self._check(keep)
            else:
                self.file, self.rows = path.open("w+b"), 0
            self.file.truncate(HEADER_BYTES + self.rows * self.row_bytes)
            self._write_header()
        except OSError as exc:
            raise UsageError(f"cannot write --output {path}: {exc.strerror or exc}") from None

    @property
    def row_bytes(self) -> int:
        return self.dim * ROW_DTYPE.itemsize

    def _check(self, keep: int) -> int:
        """`keep`, once the file is known to be ours (float32, this dim) and to hold that many rows."""
        try:
            np.lib.format.read_magic(self.file)
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.file)
        except ValueError:
            shape, fortran, dtype = (), True, None
        if dtype != ROW_DTYPE or fortran or len(shape) != 2 or shape[1] != self.dim or self.file.tell() != HEADER_BYTES:
            self.file.close()
            raise UsageError(f"--output {self.path} is not an embed file of {self.dim}-dim vectors; "
                             "remove it or write elsewhere")
        present = (os.fstat(self.file.fileno()).st_size - HEADER_BYTES) // self.row_bytes
        if present < keep:
            self.file.close()
            raise VidclsError(f"--output {self.path} holds {present} vectors but its index names {keep}: "
                              "the two files do not belong together; remove both to start over")
        return keep

    def _write_header(self) -> None:
        self.file.seek(0)
        self.file.write(npy_header(self.rows, self.dim))
        self.file.flush()

    def append(self, rows: np.ndarray) -> int:
        """Write (n, dim) rows after the last; returns the first one's row number."""
        first = self.rows
        self.file.seek(HEADER_BYTES + first * self.row_bytes)
        self.file.write(np.ascontiguousarray(rows, ROW_DTYPE).tobytes())
        self.rows += len(rows)
        self._write_header()
        return first

    def close(self) -> None:
        self.file.close()


class VectorWriter:
    """embed's records streamed to `path` as they complete: with their vectors inline (.jsonl,
    .json), or as .npy rows plus index records. resume continues the files; without it they are
    started anew (embed_run refuses to replace a non-empty output before it gets here)."""

    def __init__(self, path: Path, dim: int, meta: dict[str, Any] | None = None, resume: bool = False) -> None:
        self.meta, self.vectors = meta, None
        if vectors_format(path) == ".npy":
            kept = sum(r.get("rows") or 0 for r in read_records(index_path(path))) if resume else None
            self.vectors = NpyRows(path, dim, kept)
        self.records = ResultWriter(records_path(path), 0, resume=resume)

    def write(self, embedding: Embedding) -> None:
        if self.vectors is None:
            self.records.write(embedding.to_json(self.meta))
        else:
            self.write_rows(embedding.to_json(self.meta, {"row": None, "rows": 0}), embedding.rows())

    def write_rows(self, record: Record, rows: np.ndarray) -> None:
        """An index record whose `row`/`rows` become where `rows` (n, dim) go in this .npy file."""
        first = self.vectors.append(rows) if len(rows) else None
        self.records.write({**record, "row": first, "rows": len(rows)})

    def close(self) -> None:
        self.records.close()
        if self.vectors is not None:
            self.vectors.close()

    def __enter__(self) -> VectorWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_same_meta(done: Sequence[Record], meta: dict[str, Any], output: Path | None) -> None:
    """Refuse to continue an output written with other settings (model, recipe, views, ...): its
    vectors and this run's would not be comparable. The vidcls version may differ."""
    ours = json.loads(json.dumps(meta))
    for record in done:
        theirs = record.get("meta") or {}
        changed = sorted(k for k in ours.keys() | theirs.keys() if k != "vidcls" and ours.get(k) != theirs.get(k))
        if changed:
            raise UsageError(f"--output {output} holds {record['video']} embedded with other settings "
                             f"({', '.join(changed)}): resume with the same ones, or write another file")


def merge_vectors(path: Path, world_size: int, order: Sequence[str]) -> int:
    """torchrun's rank 0: FILE (earlier results, if any) and the rank files into FILE, in input
    order (`order`: the video names), each video once; the rank files are then removed. Returns
    the records written. .jsonl/.json merge as predict's outputs do (results.merge)."""
    if vectors_format(path) != ".npy":
        return merge(path, world_size, order, top_k=0)
    parts = [p for p in [path] + [rank_path(path, r) for r in range(world_size)] if p.exists()]
    found: dict[str, tuple[Record, np.ndarray]] = {}
    dim = 0
    for part in parts:
        rows = np.load(part, mmap_mode="r")
        dim = rows.shape[1]
        for record in read_records(index_path(part)):
            found.setdefault(record["video"], (record, rows))
    position = {name: i for i, name in enumerate(order)}
    temporary = path.with_name(f".{path.name}.merging.npy")
    with VectorWriter(temporary, dim) as writer:
        for record, rows in sorted(found.values(), key=lambda item: position.get(item[0]["video"], len(position))):
            first = record["row"] or 0
            writer.write_rows(record, rows[first:first + record["rows"]])
    os.replace(temporary, path)
    os.replace(index_path(temporary), index_path(path))
    for rank in range(world_size):
        rank_path(path, rank).unlink(missing_ok=True)
        index_path(rank_path(path, rank)).unlink(missing_ok=True)
    return len(found)
