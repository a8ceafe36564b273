"""A benchmark report written to files: CSV rows and the scaling chart."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from ..fileio import atomic_file
from ..plotting import require_matplotlib
from .sweep import BenchPoint, BenchReport


def write_csv(report: BenchReport, path: str | Path) -> Path:
    """One CSV row per point, the JSON fields as columns."""
    path = Path(path)
    columns = [f.name for f in dataclasses.fields(BenchPoint)]
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(p.to_json() for p in report.points)
    return path


PLOT_PANELS = (("gmacs", "GMACs per view"), ("peak_memory_mib", "peak memory (MiB)"),
               ("latency_ms", "latency (ms)"))


def write_plot(report: BenchReport, path: str | Path, title: str | None = None) -> Path:
    """PNG of GMACs, peak memory and latency against frames, one line per model, log-log axes."""
    plt = require_matplotlib()
    path = Path(path)
    fig, axes = plt.subplots(1, len(PLOT_PANELS), figsize=(13, 4.2), dpi=100, layout="constrained")
    for ax, (metric, label) in zip(axes, PLOT_PANELS):
        for model in report.models():
            xs, ys = report.series(model, metric)
            if xs:
                ax.plot(xs, ys, marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames T")
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs frames")
        ax.grid(True, which="both", alpha=0.3)
    frames = sorted({p.frames for p in report.points})
    for ax in axes:
        ax.set_xticks(frames, [str(t) for t in frames])
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
