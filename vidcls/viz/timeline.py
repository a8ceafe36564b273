"""A timeline as a picture: time across, the segments on top, the top classes as rows of scores.

Meant to be read by a person at any length: ticks are thinned to a handful of round times
(seconds for a clip, minutes or hours for a recording), class names are cut to fit, and
only segments wide enough to hold their label are labelled. Needs matplotlib (the `plot`
extra), loaded only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidcls.fileio import atomic_file
from vidcls.inference.timeline import Timeline, clock_text
from vidcls.viz.plotting import require_matplotlib

MAX_ROWS = 6
LABEL_CHARS = 28
# Tick steps in seconds, the roundest first within each scale; the smallest giving <= max_ticks wins.
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600)


def tick_step(duration_s: float, max_ticks: int = 10) -> float:
    """The roundest step giving at most `max_ticks` ticks over `duration_s`."""
    return next((s for s in _TICK_STEPS if duration_s / s <= max_ticks), _TICK_STEPS[-1])


def top_classes(timeline: Timeline, rows: int = MAX_ROWS) -> list[int]:
    """The classes worth a row: those that are top-1 somewhere, by time held, then by mean score."""
    bounds = timeline.bounds()
    held: dict[int, float] = {}
    for k, label in enumerate(timeline.top1()):
        held[label] = held.get(label, 0.0) + bounds[k + 1] - bounds[k]
    ranked = sorted(held, key=held.get, reverse=True)
    by_mean = [int(i) for i in timeline.probs.mean(dim=0).argsort(descending=True) if int(i) not in held]
    return (ranked + by_mean)[:rows]


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def plot_timeline(timeline: Timeline, path: str | Path, title: str | None = None, rows: int = MAX_ROWS) -> Path:
    """PNG (1200 px wide): segments as coloured bands with their labels, then one row per top
    class with its score over time (darker = more probable), round clock times underneath."""
    plt = require_matplotlib()
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    path = Path(path)
    classes = top_classes(timeline, rows)
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    bounds = torch.tensor(timeline.bounds())
    duration = float(bounds[-1])
    fig, (bands, grid) = plt.subplots(2, 1, sharex=True, figsize=(12, 1.6 + 0.38 * len(classes)), dpi=100,
                                      height_ratios=[1, max(1, len(classes)) * 0.7], layout="constrained")
    for segment in timeline.segments():
        width = segment.end_s - segment.start_s
        colour = colours.get(segment.index, "lightgrey")
        bands.broken_barh([(segment.start_s, width)], (0, 1), facecolors=colour, edgecolors="white", linewidth=0.5)
        if width / duration > 0.06:  # room for a label
            bands.text(segment.start_s + width / 2, 0.5, f"{_short(segment.label)} {segment.score:.2f}",
                       ha="center", va="center", fontsize=8, clip_on=True)
    bands.set_ylim(0, 1)
    bands.set_yticks([0.5], ["segments"])
    bands.tick_params(axis="y", length=0)
    scores = timeline.probs[:, classes].T.numpy()  # (rows, windows)
    mesh = grid.pcolormesh(bounds.numpy(), range(len(classes) + 1), scores, cmap="Greys", vmin=0, vmax=1,
                           shading="flat")
    grid.set_yticks([r + 0.5 for r in range(len(classes))], [_short(timeline.labels[c]) for c in classes])
    for tick, c in zip(grid.get_yticklabels(), classes, strict=True):
        tick.set_color(colours[c])
    grid.invert_yaxis()
    fig.colorbar(mesh, ax=grid, label="score", fraction=0.03, pad=0.01)
    grid.set_xlim(0, duration)
    grid.xaxis.set_major_locator(MultipleLocator(tick_step(duration)))
    grid.xaxis.set_major_formatter(FuncFormatter(lambda t, _: clock_text(t).removesuffix(".0")))
    grid.set_xlabel("time (m:ss or h:mm:ss)")
    bands.set_title(title or f"{Path(timeline.video).name}: {timeline.model}, {len(timeline.windows)} windows",
                    fontsize=10)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
