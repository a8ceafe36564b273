"""What the commands print: tables, progress bars and the one-line error/warning/note/done messages.

Rendering only; parsing lives in the command modules and the work in the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from vidcls.errors import printable

out = Console()
err = Console(stderr=True)


WEIGHTS_MARKS = ("attention is linear in the ff-linear family, quadratic in the others. weights: hf = on the "
                 "Hugging Face Hub, url = the authors' file at a URL (both fetched and verified on first use), "
                 "package = shipped with vidcls, none = architecture only (train it, or pass --weights); "
                 "--with-weights for sources and published top-1")


# the one label-set name too long for an 80-column table, in the abbreviation its papers use
SHORT_LABELS = {"something-something-v2": "sth-sth-v2"}


def plain(text: object) -> Text:
    """A text that comes from a user or a file (a video's path, a model's name or label, a REF, a URL,
    an error) as rich shows it: never read as rich markup (`[/]` and `[bold red]` print as they are)
    and with newlines, control characters and terminal escapes spelled out (errors.printable), so
    it can neither style, move or clear the terminal, set its title, nor break a line or a table.
    Every table cell and title and every message line that holds such a text goes through here."""
    return Text(printable(str(text)))


def bar_text(text: object) -> str:
    """plain() for a progress bar's description, which rich reads as markup: escaped."""
    return escape(plain(text).plain)


def say(console: Console, text: object) -> None:
    """One line of plain text (plain), as the commands report what they wrote."""
    console.print(plain(text), highlight=False, soft_wrap=True)


def weights_mark(source: str | None) -> str:
    """hf, url, package or none: the kind of a weights source, short enough for an 80-column table."""
    if source is None:
        return "none"
    scheme = source.split(":")[0]
    return "url" if scheme in ("http", "https") else scheme


def plain_table(title: str | Text, caption: str | None = None) -> Table:
    """A borderless table, one space between columns, so that it fits 80 columns."""
    return Table(title=title, caption=caption, caption_justify="left", box=None, pad_edge=False,
                 padding=(0, 1, 0, 0), header_style="bold")


def show(console: Console, table: Table, wide: bool = False) -> None:
    """Print a table on stdout: on a terminal at its width (names cut in the middle, see MiddleCut);
    anywhere else (a pipe, a file) as plain text, without box lines or colour, at the table's natural
    width, so a script or a log reads every cell whole, one row per line. wide: at the natural width
    on a terminal too (what `benchmark --wide` asks for; the terminal wraps what it cannot show)."""
    if not console.is_terminal:
        table.box, table.pad_edge, table.padding = None, False, (0, 1, 0, 0)
    elif not wide:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(1 << 16)).maximum
    # rich never prints wider than a console's width: a console of the table's own width does
    Console(file=console.file, width=natural, force_terminal=console.is_terminal,
            color_system=console.color_system).print(table, highlight=False)


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle so a path keeps its file name
    (`/data/…/clip.mp4`); a file name longer than the width keeps its start and its end."""
    if len(text) <= width:
        return text
    tail = text[text.rfind("/"):] if "/" in text else ""
    if tail and len(tail) + 2 <= width:
        return text[:width - 1 - len(tail)] + "…" + tail
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


class MiddleCut:
    """A table cell holding a name: never narrower than `…` and its file name, cut in the middle
    (middle_cut) when the column is narrower than the whole, printed as plain() prints it."""

    def __init__(self, text: str) -> None:
        self.text = plain(text).plain

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        name = self.text[self.text.rfind("/"):] if "/" in self.text else self.text
        return Measurement(min(len(self.text), len(name) + 1), len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        yield Text(middle_cut(self.text, options.max_width), no_wrap=True, overflow="crop")


def models_tables(rows: list[dict[str, Any]], with_weights: bool) -> list[Table]:
    """The zoo, with a short mark for where the weights come from (hf, url, package or none); a `zoo`
    column names the VIDCLS_ZOO file of each entry when there are any; with_weights adds a table of
    the full sources and published top-1."""
    user_zoo = any(row["zoo"] != "vidcls" for row in rows)
    table = plain_table("vidcls model zoo", WEIGHTS_MARKS)
    for column in ("name", "family", "frames", "size", "views", "weights", "labels", *(("zoo",) if user_zoo else ())):
        table.add_column(column, no_wrap=column != "zoo", overflow="fold",
                         justify="right" if column in ("size", "views") else "left")
    for row in rows:
        table.add_row(plain(row["name"]), plain(row["family"]), f"{row['frames']}x{row['stride']}",
                      str(row["size"]), str(row["views"]), plain(weights_mark(row["weights"])),
                      plain(SHORT_LABELS.get(row["labels"], row["labels"] or "-")),
                      *((plain(row["zoo"]),) if user_zoo else ()))
    if not with_weights:
        return [table]
    sources = plain_table("weights")
    for column in ("name", "top-1 (views)", "source"):  # the source last: a long one folds inside its column
        sources.add_column(column, no_wrap=column == "name", overflow="fold")
    for row in rows:
        if row["weights"]:
            views = f" ({row['top1_views']})" if row["top1_views"] else ""
            top1 = "-" if row["top1"] is None else f"{row['top1']}{views}"
            sources.add_row(plain(row["name"]), plain(top1), plain(row["weights"]))
    return [table, sources]


def progress_bar() -> Progress:
    """A transient progress bar on stderr, only on a terminal (a piped or logged stderr keeps
    just the messages, and an error stays the only line)."""
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)


def prediction_table(results: list) -> Table:
    """Each classified video's top-k; a long video path is cut in the middle (MiddleCut)."""
    table = Table(title="predictions")
    for column, justify in (("video", "left"), ("#", "right"), ("label", "left"), ("score", "right")):
        table.add_column(column, justify=justify, no_wrap=column != "video")
    for result in results:
        if result.error:
            continue
        for rank, item in enumerate(result.top_k, 1):
            table.add_row(MiddleCut(result.video) if rank == 1 else "", str(rank), plain(item["label"]),
                          f"{item['score']:.3f}", end_section=rank == len(result.top_k))
    return table


def input_line(kind: str, style: str, text: str) -> None:
    """`error: TEXT` (warning, note, done) on stderr, one line: TEXT as plain() shows it."""
    err.print(Text.assemble((f"{kind}:", f"bold {style}"), " ", plain(text)), highlight=False, soft_wrap=True)


def run_done_line(verb: str, run: Any, count: int, failed: int) -> None:
    """done_line for a finished run with --output (predict, embed): its resumed count and the torchrun merge."""
    merged = f"; merged {run.merged} results from all processes" if run.merged is not None else ""
    done_line(count, verb, failed, run.output, run.resumed, merged)


def embedding_table(embeddings: list, meta: dict[str, Any]) -> Table:
    """embed without --json/--output: each video's vectors (how many, of which dimension) and their mean norm."""
    count = meta["views_per_video"]
    views = "one per view" if meta["views"] == "all" else f"mean of {count} view{'s' if count > 1 else ''}"
    over_time = " in each window" if meta["timeline"] else ""
    table = plain_table(plain(f"{meta['model']} embeddings"), f"pre-logits, {views}{over_time}")
    table.add_column("video", overflow="fold")  # a long path folds rather than losing its file name
    for column in ("vectors", "dim", "mean norm"):
        table.add_column(column, justify="right", no_wrap=True)
    for embedding in embeddings:
        if embedding.error:
            continue
        rows = embedding.vectors.reshape(-1, embedding.vectors.shape[-1])
        table.add_row(plain(embedding.video), str(len(rows)), str(rows.shape[1]),
                      f"{rows.norm(dim=1).mean().item():.3f}")
    return table


def segments_table(results: list) -> Table:
    """predict --timeline: each video's segments (consecutive windows with the same top-1)."""
    from vidcls.inference.timeline import SEGMENT_COLUMNS, segment_text

    table = Table(title="segments")
    table.add_column("video")
    for column in SEGMENT_COLUMNS:
        table.add_column(column, justify="left" if column == "label" else "right", no_wrap=True)
    for result in results:
        if result.error:
            continue
        rows = [segment_text(s) for s in result.timeline["segments"]]
        for n, row in enumerate(rows):
            table.add_row(MiddleCut(result.video) if n == 0 else "", *map(plain, row),
                          end_section=n == len(rows) - 1)
    return table


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def evaluation_tables(summary) -> list[Table]:
    """The headline numbers, then per-class accuracy (all classes up to 30; else the 10 worst
    and 10 best, --json has them all)."""
    head = plain_table(plain(summary.title))
    head.add_column("metric")
    head.add_column("value", justify="right")
    for name, value in (("top-1", percent(summary.top1)), ("top-5", percent(summary.top5)),
                        ("mean class accuracy", percent(summary.mean_class_accuracy)),
                        ("videos evaluated", str(summary.evaluated)),
                        ("could not be classified", str(len(summary.failed)))):
        head.add_row(name, value)
    rows = sorted(((v["accuracy"], label, v["videos"]) for label, v in summary.per_class.items()
                   if v["accuracy"] is not None), key=lambda r: (r[0], r[1]))
    caption = None
    if len(rows) > 30:
        caption = f"the 10 worst and 10 best of {len(rows)} classes; --json lists all"
        rows = rows[:10] + rows[-10:]
    per_class = plain_table("per-class accuracy", caption)
    for column, justify in (("class", "left"), ("accuracy", "right"), ("videos", "right")):
        per_class.add_column(column, justify=justify)
    for accuracy, label, videos in rows:
        per_class.add_row(plain(label), percent(accuracy), str(videos))
    return [head, per_class]


EFFECTIVE_MFU = ("onnxruntime and openvino rows: GMACs are the torch graph's and MFU is an effective rate against "
                 "torch's matmul rate; their own GEMM kernels, and int8 products, can beat it, so it may exceed 100%")


# benchmark's columns: the default set fits 80 columns with the zoo's names; --wide adds the rest
POINT_COLUMNS = ("model", "T", "size", "params M", "GMACs/view", "peak MiB", "latency ms", "MFU")
WIDE_COLUMNS = ("model", "T", "size", "params M", "GMACs/view", "attn %", "peak MiB", "latency ms", "min-max ms",
                "CPU ms", "clips/s", "MFU")


def point_cells(p: Any) -> dict[str, Any]:
    """Every column of one benchmark point, as its cell."""
    def num(value: Any, spec: str = ".4g") -> str:
        return "-" if value is None else format(value, spec)

    spread = "-" if p.latency_ms is None else f"{p.latency_min_ms:.4g}-{p.latency_max_ms:.4g}"
    return {"model": MiddleCut(p.model), "T": str(p.frames), "size": str(p.size), "params M": f"{p.params / 1e6:.2f}",
            "GMACs/view": f"{p.gmacs:.4g} x{p.views}", "attn %": f"{100 * p.attention_share:.0f}",
            "peak MiB": num(p.peak_memory_mib), "latency ms": plain(p.error) if p.error else num(p.latency_ms),
            "min-max ms": spread, "CPU ms": num(p.cpu_time_ms), "clips/s": num(p.clips_per_s, ".3g"),
            "MFU": num(p.mfu, ".1%")}


def benchmark_tables(report, wide: bool = False) -> tuple[Table, Table]:
    """The points (POINT_COLUMNS, or WIDE_COLUMNS with wide) and the cost-growth exponents, borderless,
    numbers never wrapped."""
    effective = any(p.runtime != "torch" for p in report.points)
    points = plain_table(f"cost per point (device matmul rate {report.matmul_gflops_per_s:.1f} GFLOP/s)",
                         EFFECTIVE_MFU if effective else None)
    columns = WIDE_COLUMNS if wide else POINT_COLUMNS
    for column in columns:
        points.add_column(column, justify="left" if column == "model" else "right",
                          no_wrap=column not in ("model", "latency ms"))  # a name cuts in the middle, an error wraps
    for p in report.points:
        cells = point_cells(p)
        points.add_row(*(cells[column] for column in columns))
    scaling = plain_table("cost ~ T^k: exponent k (1 linear, 2 quadratic)")
    for column in ("model", "GMACs", "peak memory", "latency", "CPU time"):
        scaling.add_column(column, justify="left" if column == "model" else "right", no_wrap=column != "model")
    for name in report.models():
        exponents = report.exponents(name).values()
        scaling.add_row(MiddleCut(name), *("-" if value is None else f"{value:.2f}" for value in exponents))
    return points, scaling


class VideoProgress:
    """A progress bar over the videos of a run (on stderr, only on a terminal) and the callbacks that
    drive it: on_start(total), then on_result(prediction) for each, which also prints that video's
    error and warnings as one line each and counts the failures."""

    def __init__(self, verb: str) -> None:
        self.verb, self.failed, self.done, self.total = verb, 0, 0, 0
        self.bar = progress_bar()
        self.task = self.bar.add_task(verb, visible=False)

    def __enter__(self) -> VideoProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def on_start(self, total: int) -> None:
        self.total = total
        self.bar.update(self.task, total=total, visible=total > 1)

    def on_result(self, result: Any) -> None:
        self.done += 1
        self.bar.update(self.task, advance=1, description=bar_text(f"{self.verb} {Path(result.video).name}"))
        if result.error:
            self.failed += 1
            input_line("error", "red", f"{printable(result.video)}: {result.error}")
        for warning in result.warnings:
            input_line("warning", "yellow", f"{printable(result.video)}: {warning}")


def done_line(count: int, verb: str, failed: int, output: Path, resumed: int = 0, after: str = "") -> None:
    """The `done:` line that ends a run writing --output (also a stopped one): what is in the file."""
    there = f", {resumed} already there" if resumed else ""
    input_line("done", "green", f"{count} {verb} ({failed} failed){there}: {printable(str(output))}{after}")


def interrupted_message(progress: VideoProgress, output: Path | None) -> str:
    """What Ctrl-C (or SIGTERM) leaves: how far the run got, where its results are, how to go on."""
    got = f"interrupted after {progress.done} of {progress.total} videos"
    if output is None:
        return f"{got}; nothing was kept (with --output FILE results stream to FILE, and --resume continues it)"
    return (f"{got}: their results are in {printable(str(output))}; rerun the same command with --resume "
            f"to continue")
