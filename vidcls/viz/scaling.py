"""`vidcls benchmark --plot`: GMACs, peak memory and latency against frames, one line per model.
"""

from __future__ import annotations

from pathlib import Path

from vidcls.bench.sweep import BenchReport
from vidcls.fileio import atomic_file
from vidcls.viz.plotting import require_matplotlib

PLOT_PANELS = (("gmacs", "GMACs per view"), ("peak_memory_mib", "peak memory (MiB)"),
               ("latency_ms", "latency (ms)"))


def write_plot(report: BenchReport, path: str | Path, title: str | None = None) -> Path:
    """PNG of GMACs, peak memory and latency against frames, one line per model, log-log axes."""
    plt = require_matplotlib()
    path = Path(path)
    fig, axes = plt.subplots(1, len(PLOT_PANELS), figsize=(13, 4.2), dpi=100, layout="constrained")
    for ax, (metric, label) in zip(axes, PLOT_PANELS, strict=True):
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
