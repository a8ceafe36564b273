"""The confusion matrix of `vidcls evaluate --plot`, readable from 4 to 400 classes.
"""

from __future__ import annotations

import math
from pathlib import Path

from vidcls.errors import VidclsError
from vidcls.fileio import atomic_file
from vidcls.inference.metrics import OTHER, EvalSummary
from vidcls.viz.plotting import require_matplotlib


def plot_confusion(summary: EvalSummary, path: Path) -> None:
    """A row-normalised confusion matrix as PNG, readable from 4 to 400 classes: cell values
    written for small matrices, tick labels thinned (and shrunk) for large ones."""
    import numpy as np

    plt = require_matplotlib()

    counts = np.array(summary.confusion, dtype=float)
    if counts.size == 0:
        raise VidclsError("--plot: no video was evaluated, nothing to draw")
    has_other = counts[:, -1].any()
    if not has_other:
        counts = counts[:, :-1]
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(summary.classes)
    side = min(22.0, max(5.0, 0.22 * n + 3))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class")
    step = max(1, math.ceil(n / 60))  # at most ~60 labelled ticks per axis
    fontsize = 9 if n <= 20 else 7 if n <= 60 else 6
    columns = [*summary.classes, OTHER] if has_other else summary.classes
    ax.set_xticks(range(0, len(columns), step), [columns[i] for i in range(0, len(columns), step)],
                  rotation=90, fontsize=fontsize)
    ax.set_yticks(range(0, n, step), [summary.classes[i] for i in range(0, n, step)], fontsize=fontsize)
    if n <= 20:
        for (i, j), value in np.ndenumerate(rows):
            if counts[i, j]:
                ax.text(j, i, f"{value:.2f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top1 = f"{summary.top1:.1%}" if summary.top1 is not None else "n/a"
    ax.set_title(f"{summary.model}: top-1 {top1} on {summary.evaluated} videos"
                 + (f" (every {step}th class labelled)" if step > 1 else ""))
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as exc:
        raise VidclsError(f"--plot {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
