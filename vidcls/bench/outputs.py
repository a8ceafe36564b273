"""A benchmark report written to files: CSV rows and the scaling chart."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from vidcls.bench.sweep import BenchPoint, BenchReport
from vidcls.fileio import atomic_file


def write_csv(report: BenchReport, path: str | Path) -> Path:
    """One CSV row per point, the JSON fields as columns."""
    path = Path(path)
    columns = [f.name for f in dataclasses.fields(BenchPoint)]
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(p.to_json() for p in report.points)
    return path
