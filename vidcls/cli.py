"""The `vidcls` command line: parse the options, call one library function, render its result.

Exit codes (docs/cli.md): 0 all done, 1 some input failed (the others were processed),
2 the command line itself is wrong. Errors are one line, with no traceback unless --debug
(accepted before or after the command).

Only typer, rich and vidcls's torch-free modules are imported here; each command imports
the library it calls, so `vidcls --help` and `vidcls --version` never load torch.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .choices import CROPS, DEVICE_METAVAR, DEVICE_PATTERN, DIRECTIONS, INFLATIONS, OPTIMIZERS, PRECISIONS, SAMPLINGS
from .errors import UsageError, VidclsError, first_line, printable

out = Console()
err = Console(stderr=True)
_state = {"debug": False}


def fail(message: str, code: int) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise.

    The message goes through `printable`, so a name holding a newline or a terminal escape
    can neither split the line nor reach the terminal raw.
    """
    err.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _debug_first(args: list[str]) -> list[str]:
    """Move every --debug (before a `--`) to the front, where the group's own option parses it."""
    end = args.index("--") if "--" in args else len(args)
    rest = [arg for arg in args[:end] if arg != "--debug"]
    return ["--debug"] * (len(rest) < end) + rest + args[end:]


class VidclsGroup(TyperGroup):
    """The command group; it takes --debug anywhere on the line, not only before the command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _debug_first(args))


def checked(option: str, pattern: str, metavar: str) -> dict[str, Any]:
    """typer.Option arguments for a value from a fixed vocabulary: --help shows `metavar`,
    and a value not matching `pattern` is refused while parsing, in one line (exit 2)."""

    def check(value: Any) -> Any:
        if value is not None and not re.fullmatch(pattern, str(value)):
            raise fail(f"{option} must be {metavar}, got {str(value)!r}", 2)
        return value

    return {"metavar": metavar, "callback": check}


def one_of(option: str, values: Any) -> dict[str, Any]:
    """checked() for a list of values (the vocabularies of vidcls.choices)."""
    names = [str(v) for v in values]
    return checked(option, "|".join(map(re.escape, names)), "|".join(names))


app = typer.Typer(cls=VidclsGroup, add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Classify videos with linear and quadratic video transformers.")


def guarded(command: Callable) -> Callable:
    """Turn library errors into one-line messages and exit codes (tracebacks only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except VidclsError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as exc:  # noqa: BLE001 - the contract is one line, not a traceback
            if _state["debug"]:
                raise
            raise fail(f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for details)",
                       1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"vidcls {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks on errors (before or after the command).")] = False,
) -> None:
    """vidcls: video classification with a model zoo of video transformers (docs/cli.md)."""
    _state["debug"] = debug


WEIGHTS_MARKS = ("attention is linear in the ff-linear family, quadratic in the others. weights: hf = on the "
                 "Hugging Face Hub, url = the authors' file at a URL (both fetched and verified on first use), "
                 "package = shipped with vidcls, none = architecture only (train it, or pass --weights); "
                 "--with-weights for sources and published top-1")


# the one label-set name too long for an 80-column table, in the abbreviation its papers use
SHORT_LABELS = {"something-something-v2": "sth-sth-v2"}


def _weights_mark(source: str | None) -> str:
    """hf, url, package or none: the kind of a weights source, short enough for an 80-column table."""
    if source is None:
        return "none"
    scheme = source.split(":")[0]
    return "url" if scheme in ("http", "https") else scheme


def _plain_table(title: str, caption: str | None = None) -> Table:
    """A borderless table, one space between columns, so that it fits 80 columns."""
    return Table(title=title, caption=caption, caption_justify="left", box=None, pad_edge=False,
                 padding=(0, 1, 0, 0), header_style="bold")


def _models_tables(rows: list[dict[str, Any]], with_weights: bool) -> list[Table]:
    """The zoo, with a short mark for where the weights come from (hf, url, package or none); a `zoo`
    column names the VIDCLS_ZOO file of each entry when there are any; with_weights adds a table of
    the full sources and published top-1."""
    user_zoo = any(row["zoo"] != "vidcls" for row in rows)
    table = _plain_table("vidcls model zoo", WEIGHTS_MARKS)
    for column in ("name", "family", "frames", "size", "views", "weights", "labels", *(("zoo",) if user_zoo else ())):
        table.add_column(column, no_wrap=column != "zoo", overflow="fold",
                         justify="right" if column in ("size", "views") else "left")
    for row in rows:
        table.add_row(row["name"], row["family"], f"{row['frames']}x{row['stride']}",
                      str(row["size"]), str(row["views"]), _weights_mark(row["weights"]),
                      SHORT_LABELS.get(row["labels"], row["labels"] or "-"), *((row["zoo"],) if user_zoo else ()))
    if not with_weights:
        return [table]
    sources = _plain_table("weights")
    for column in ("name", "top-1 (views)", "source"):  # the source last: a long one folds inside its column
        sources.add_column(column, no_wrap=column == "name", overflow="fold")
    for row in rows:
        if row["weights"]:
            top1 = "-" if row["top1"] is None else f"{row['top1']}" + (f" ({row['top1_views']})" if row["top1_views"] else "")
            sources.add_row(row["name"], top1, row["weights"])
    return [table, sources]


@app.command("models")
@guarded
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
    with_weights: Annotated[bool, typer.Option("--with-weights", help="Also list where each model's weights come from in full (package:NAME, hf://OWNER/REPO@REV or a URL), the published top-1 and, with VIDCLS_ZOO, the zoo file of each entry.")] = False,
) -> None:
    """List the zoo: every model name usable with --model (VIDCLS_ZOO adds your own zoo files).

    frames = frames per clip x sampling stride; views = clips x crops of the test protocol.
    """
    from .api import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for table in _models_tables(rows, with_weights):
        out.print(table)


def _progress() -> Progress:
    """A transient progress bar on stderr, only on a terminal (a piped or logged stderr keeps
    just the messages, and an error stays the only line)."""
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)


def _prediction_table(results: list) -> Table:
    table = Table(title="predictions")
    for column, justify in (("video", "left"), ("#", "right"), ("label", "left"), ("score", "right")):
        table.add_column(column, justify=justify)
    for result in results:
        if result.error:
            continue
        for rank, item in enumerate(result.top_k, 1):
            table.add_row(result.video if rank == 1 else "", str(rank), item["label"],
                          f"{item['score']:.3f}", end_section=rank == len(result.top_k))
    return table


# Options predict and evaluate share: one declaration, one help text.
ClipsOption = Annotated[Optional[int], typer.Option("--clips", min=1, help="Temporal clips per video (default: the model's recipe).")]
CropsOption = Annotated[Optional[int], typer.Option("--crops", **one_of("--crops", CROPS), help="Spatial crops per clip: 1 (centre) or 3 (left/centre/right); default: the model's recipe.")]
FramesOption = Annotated[Optional[int], typer.Option("--frames", min=1, help="Frames per clip (default: the model's recipe; other counts interpolate the time embedding, with a warning).")]
StrideOption = Annotated[Optional[int], typer.Option("--stride", min=1, help="Frames between samples with dense sampling (default: the model's recipe).")]
SamplingOption = Annotated[Optional[str], typer.Option("--sampling", **one_of("--sampling", SAMPLINGS), help="segment: frames spread over the whole video; dense: frames x stride consecutive (default: the model's recipe).")]
PrecisionOption = Annotated[str, typer.Option("--precision", **one_of("--precision", PRECISIONS), help="bf16/fp16 run under autocast; fp32 is right on CPUs.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Views per forward pass (views of consecutive videos are batched together).")]
WorkersOption = Annotated[Optional[int], typer.Option("--workers", min=0, help="Processes decoding videos ahead of the model (default on CPU: one per core for a cheap model (under 1 GMAC per video), else a quarter of the cores; with CUDA: all cores but two; 0: decode in this process).")]
ThreadsOption = Annotated[Optional[int], typer.Option("--threads", min=1, help="Torch threads of the model process (default: 1 for a cheap model on CPU, whose cores decode; else one per core).")]
WeightsOption = Annotated[Optional[Path], typer.Option("--weights", help="Local safetensors file replacing the model's weights.")]


def _terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job) ends a run like Ctrl-C: finished results are kept."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _input_line(kind: str, style: str, text: str) -> None:
    err.print(f"[bold {style}]{kind}:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _segments_table(results: list) -> Table:
    """predict --timeline: each video's segments (consecutive windows with the same top-1)."""
    from .timeline import SEGMENT_COLUMNS, segment_text

    table = Table(title="segments")
    table.add_column("video")
    for column in SEGMENT_COLUMNS:
        table.add_column(column, justify="left" if column == "label" else "right")
    for result in results:
        if result.error:
            continue
        rows = [segment_text(s) for s in result.timeline["segments"]]
        for n, row in enumerate(rows):
            table.add_row(escape(printable(result.video)) if n == 0 else "", *map(escape, row),
                          end_section=n == len(rows) - 1)
    return table


@app.command("predict")
@guarded
def predict_command(
    videos: Annotated[list[str], typer.Argument(help="Video files, folders (searched for videos), URLs (http(s)://, rtsp://), - for stdin, or @LIST (a file of inputs, one per line).", metavar="VIDEO", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help=r"Zoo name, hf://OWNER/REPO\[@REV], a model directory, or an exported .onnx file (or a directory holding model.onnx).")],  # \[: not rich markup
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many labels to show per video.")] = 5,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: Annotated[str, typer.Option("--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR), help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.")] = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write one result per video as it completes: .jsonl, .json or .csv (by suffix); every line is flushed, Ctrl-C keeps the finished ones.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --output: skip the videos already in it (a torn last line is redone).")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Classify every N-th video from position I of the input list (0 <= I < N); under torchrun each process takes its own.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (schema in docs/cli.md) to stdout.")] = False,
    timeline: Annotated[bool, typer.Option("--timeline", help="Label each video over time: the model's recipe on windows covering the video (one pass over the file); the table shows segments of the same top-1, the JSON each window too.", rich_help_panel="Long videos")] = False,
    window: Annotated[Optional[float], typer.Option("--window", min=0.001, metavar="SECONDS", help="Window length (default: the model's clip span, frames x stride / fps, or 2 s for segment sampling); implies --timeline.", rich_help_panel="Long videos")] = None,
    hop: Annotated[Optional[float], typer.Option("--hop", min=0.001, metavar="SECONDS", help="Time between window starts (default: half the window; at most the window); implies --timeline.", rich_help_panel="Long videos")] = None,
    smooth: Annotated[int, typer.Option("--smooth", min=1, metavar="N", help="Average the probabilities over N consecutive windows before labelling; implies --timeline when above 1.", rich_help_panel="Long videos")] = 1,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw the timeline as PNG (with several videos: FILE-<video>.png); needs matplotlib; implies --timeline.", rich_help_panel="Long videos")] = None,
    out_video: Annotated[Optional[Path], typer.Option("--out-video", help="Write the video again with the current window's top-1 label and score on every frame (H.264; with several videos: FILE-<video>.mp4); implies --timeline.", rich_help_panel="Long videos")] = None,
) -> None:
    """Classify videos and print the top-k labels of each.

    The softmax is averaged over clips x crops views. A video that cannot be decoded or
    classified is reported on stderr (exit code 1) and the others are still classified.
    With --output, results stream to the file and stdout gets only what --json asks for.
    """
    from .api import TimelineOptions, predict_run
    from .bench import cost_line

    _terminate_as_interrupt()
    over_time = timeline or smooth > 1 or any(v is not None for v in (window, hop, plot, out_video))
    options = TimelineOptions(window, hop, smooth, plot, out_video) if over_time else None
    failed = 0
    with _progress() as progress:
        task = progress.add_task("classifying", visible=False)

        def on_start(total: int) -> None:
            progress.update(task, total=total, visible=total > 1)

        def on_result(result) -> None:
            nonlocal failed
            progress.update(task, advance=1, description=f"classified {Path(result.video).name}")
            if result.error:
                failed += 1
                _input_line("error", "red", f"{printable(result.video)}: {result.error}")
            for warning in result.warnings:
                _input_line("warning", "yellow", f"{printable(result.video)}: {warning}")

        run = predict_run(videos, model, weights=weights, top_k=top_k, clips=clips, crops=crops,
                          frames=frames, stride=stride, sampling=sampling, device=device,
                          precision=precision, batch_size=batch_size, workers=workers, threads=threads,
                          output=output, resume=resume, shard=shard, timeline=options, on_start=on_start,
                          on_result=on_result)
    if run.skipped_note:
        _input_line("note", "cyan", run.skipped_note)
    if as_json:
        print(json.dumps(run.to_json(), indent=2))
    elif output is None and failed < len(run.predictions):
        out.print(_segments_table(run.predictions) if options else _prediction_table(run.predictions))
        if options is None:  # a timeline's cost is per window, not the per-video line
            out.print(cost_line(run.cost, [p.timing_ms for p in run.predictions if not p.error]), highlight=False)
    if output is not None:
        resumed = f", {run.resumed} already there" if run.resumed else ""
        merged = f"; merged {run.merged} results from all processes" if run.merged is not None else ""
        _input_line("done", "green", f"{len(run.predictions)} classified ({failed} failed){resumed}: "
                    f"{printable(str(output))}{merged}")
    if failed:
        raise typer.Exit(1)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _evaluation_tables(summary) -> list[Table]:
    """The headline numbers, then per-class accuracy (all classes up to 30; else the 10 worst
    and 10 best, --json has them all)."""
    head = _plain_table(f"evaluation of {summary.model}")
    head.add_column("metric")
    head.add_column("value", justify="right")
    for name, value in (("top-1", _percent(summary.top1)), ("top-5", _percent(summary.top5)),
                        ("mean class accuracy", _percent(summary.mean_class_accuracy)),
                        ("videos evaluated", str(summary.evaluated)), ("could not be classified", str(len(summary.failed)))):
        head.add_row(name, value)
    rows = sorted(((v["accuracy"], label, v["videos"]) for label, v in summary.per_class.items()
                   if v["accuracy"] is not None), key=lambda r: (r[0], r[1]))
    caption = None
    if len(rows) > 30:
        caption = f"the 10 worst and 10 best of {len(rows)} classes; --json lists all"
        rows = rows[:10] + rows[-10:]
    per_class = _plain_table("per-class accuracy", caption)
    for column, justify in (("class", "left"), ("accuracy", "right"), ("videos", "right")):
        per_class.add_column(column, justify=justify)
    for accuracy, label, videos in rows:
        per_class.add_row(escape(label), _percent(accuracy), str(videos))
    return [head, per_class]


@app.command("evaluate")
@guarded
def evaluate_command(
    model: Annotated[str, typer.Option("--model", "-m", help=r"Zoo name, hf://OWNER/REPO\[@REV], a model directory, or an exported .onnx file.")],  # \[: not rich markup
    data: Annotated[Path, typer.Option("--data", help="Labelled videos: a folder with one sub-folder per class, or a list file ('path label' lines, or a CSV with path and label columns), as for train.")],
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: Annotated[str, typer.Option("--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR), help="auto picks CUDA when available.")] = "auto",
    precision: PrecisionOption = "fp32",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Per-video predictions (with the true label), streamed: .jsonl, .json or .csv.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --output: skip the videos already in it; the summary covers them all.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the confusion matrix as PNG (needs matplotlib, the plot extra).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object (schema in docs/cli.md).")] = False,
) -> None:
    """Measure a model's accuracy on labelled videos: top-1, top-5, mean class accuracy,
    per-class accuracy and a confusion matrix.

    Videos that cannot be decoded are counted and listed (exit code 1), never part of an
    accuracy. A data label the model does not have stops the run before any decoding.
    """
    from .api import evaluate_run

    _terminate_as_interrupt()
    with _progress() as progress:
        task = progress.add_task("evaluating", visible=False)

        def on_start(total: int) -> None:
            progress.update(task, total=total, visible=total > 1)

        def on_result(result) -> None:
            progress.update(task, advance=1, description=f"evaluated {Path(result.video).name}")
            if result.error:
                _input_line("error", "red", f"{printable(result.video)}: {result.error}")

        evaluation = evaluate_run(model, data, weights=weights, device=device, output=output, resume=resume,
                                  plot=plot, clips=clips, crops=crops, frames=frames, stride=stride,
                                  sampling=sampling, precision=precision, batch_size=batch_size, workers=workers,
                                  threads=threads, on_start=on_start, on_result=on_result)
    summary = evaluation.summary
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for table in _evaluation_tables(summary):
            out.print(table)
    if plot is not None:
        _input_line("done", "green", f"confusion matrix: {printable(str(plot))}")
    if summary.failed:
        raise typer.Exit(1)


@app.command("sample-clip")
@guarded
def sample_clip_command(
    output: Annotated[Path, typer.Argument(help="Where to write the .mp4 clip.")],
    direction: Annotated[str, typer.Option("--direction", **one_of("--direction", DIRECTIONS), help="Where the shape moves.")] = "left",
    frames: Annotated[int, typer.Option("--frames", min=2, help="Number of frames.")] = 16,
    width: Annotated[int, typer.Option("--width", min=16, help="Frame width in pixels.")] = 128,
    height: Annotated[int, typer.Option("--height", min=16, help="Frame height in pixels.")] = 96,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for shape, colour and position.")] = 0,
) -> None:
    """Write a synthetic clip of a shape moving in one direction (input for demo-motion)."""
    from .synthetic import make_sample_clip

    path = make_sample_clip(output, direction=direction, frames=frames, height=height, width=width,
                            seed=seed)
    err.print(f"wrote {path} ({frames} frames, {width}x{height}, moving {direction})")


def _int_list(text: str, option: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32]; anything else is a usage error naming the option."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"{option} must be a comma-separated list of positive integers, got {text!r}")
    return values


EFFECTIVE_MFU = ("onnxruntime rows: GMACs are the torch graph's and MFU is an effective rate against torch's matmul "
                 "rate; ONNX Runtime's own GEMM kernels, and int8 products, can beat it, so it may exceed 100%")


def _benchmark_tables(report) -> tuple[Table, Table]:
    def num(value: Any, spec: str = ".4g") -> str:
        return "-" if value is None else format(value, spec)

    effective = any(p.runtime != "torch" for p in report.points)
    points = Table(title=f"cost per point (device matmul rate {report.matmul_gflops_per_s:.1f} GFLOP/s)",
                   caption=EFFECTIVE_MFU if effective else None, caption_justify="left")
    for column in ("model", "T", "size", "params M", "GMACs/view", "attn %", "peak MiB", "latency ms",
                   "min-max ms", "CPU ms", "clips/s", "MFU"):
        points.add_column(column, justify="left" if column == "model" else "right")
    for p in report.points:
        spread = "-" if p.latency_ms is None else f"{p.latency_min_ms:.4g}-{p.latency_max_ms:.4g}"
        points.add_row(p.model, str(p.frames), str(p.size), f"{p.params / 1e6:.2f}", f"{p.gmacs:.4g} x{p.views}",
                       f"{100 * p.attention_share:.0f}", num(p.peak_memory_mib), p.error or num(p.latency_ms),
                       spread, num(p.cpu_time_ms), num(p.clips_per_s, ".3g"), num(p.mfu, ".1%"))
    scaling = Table(title="cost ~ T^k: exponent k (1 linear, 2 quadratic)")
    for column in ("model", "GMACs", "peak memory", "latency", "CPU time"):
        scaling.add_column(column, justify="left" if column == "model" else "right")
    for name in report.models():
        scaling.add_row(name, *(num(value, ".2f") for value in report.exponents(name).values()))
    return points, scaling


@app.command("benchmark")
@guarded
def benchmark_command(
    model: Annotated[str, typer.Option("--model", "-m", help="REF[,REF...]: zoo names, hf:// refs, model directories or exported .onnx files (timed on ONNX Runtime, at their exported shape), measured side by side.")],
    frames: Annotated[str, typer.Option("--frames", help="Comma-separated frame counts to sweep.")] = "8,16,32",
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Frame size in pixels (default: each model's input size, 224 for the paper models).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per forward pass.")] = 1,
    device: Annotated[str, typer.Option("--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR), help="auto picks CUDA when available.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", **one_of("--precision", PRECISIONS), help="bf16/fp16 run under autocast; fp32 is the CPU default, and a CPU without native support for the others is warned about.")] = "fp32",
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed forward passes before timing.")] = 2,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed forward passes; the median is reported.")] = 5,
    compile_model: Annotated[bool, typer.Option("--compile", help="Run the model through torch.compile (warm-up includes compilation).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (schema in docs/cli.md), one object per (model, frames) point.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of GMACs, peak memory and latency vs frames (needs matplotlib, the plot extra).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write the points as CSV.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the timed passes and the matmul rate (default: torch's, one per core); 1 gives steadier numbers on a busy machine.")] = None,
    in_process: Annotated[bool, typer.Option("--in-process", help="On CPU, measure in this process instead of a fresh one per point: quicker, but an out-of-memory point can end the run.")] = False,
) -> None:
    """Measure how cost grows with the number of frames, for every model side by side.

    GMACs (multiply-accumulates, the papers' "GFLOPs"; gflops = 2 x gmacs) are counted for
    one view with torch's FlopCounterMode, attention included. Latency: median of the
    repeats under torch.inference_mode; clips/s = batch / median; CPU ms = the process's
    CPU time per forward (steadier than latency on a busy machine, with --threads 1).
    MFU = achieved FLOP/s over the device's matmul rate, measured once per run.

    Peak memory is what the forward pass allocates above the weights and input: on CUDA
    the allocator's max_memory_allocated after a reset; on CPU each point runs in a fresh
    process and reports the rise of its peak resident set (Linux VmHWM, reset before the
    timed passes, after malloc_trim returns freed memory). A point that does not fit in
    memory is reported as "out of memory at T=..." and the sweep goes on.
    """
    from .api import benchmark
    from .bench import write_csv, write_plot
    from .plotting import require_matplotlib

    if plot is not None:
        require_matplotlib()  # before the sweep, not after it
    refs = [ref.strip() for ref in model.split(",") if ref.strip()]
    sweep = _int_list(frames, "--frames")

    def warn(message: str) -> None:
        err.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    with _progress() as progress:
        task = progress.add_task("benchmarking", total=len(refs) * len(sweep))

        def done(point) -> None:
            progress.update(task, advance=1, description=f"benchmarked {point.model} T={point.frames}")

        report = benchmark(refs, sweep, size, isolate=False if in_process else None, on_point=done,
                           on_warning=warn, batch_size=batch_size, device=device, precision=precision,
                           warmup=warmup, repeats=repeats, compile=compile_model, threads=threads)
    for point in report.points:
        if point.error:
            err.print(f"{point.model}: {point.error}", highlight=False)
    if plot is not None:
        err.print(f"wrote {write_plot(report, plot)}")
    if csv_path is not None:
        err.print(f"wrote {write_csv(report, csv_path)}")
    if as_json:
        print(json.dumps([p.to_json() for p in report.points], indent=2))
        return
    for table in _benchmark_tables(report):
        out.print(table)


@app.command("download")
@guarded
def download_command(
    ref: Annotated[str, typer.Argument(help="Zoo name with downloadable weights, or hf://OWNER/REPO (optionally @REVISION).")],
) -> None:
    """Prefetch a model's weights (and config) and verify their sha256; print where they are.

    Hub files go to the Hugging Face cache, with its settings: HF_HOME / HF_HUB_CACHE, HF_TOKEN,
    HF_HUB_OFFLINE. A zoo entry's file at a URL is downloaded (resuming a partial download),
    converted once and kept as a model directory in $VIDCLS_HOME/converted. A first download of
    a file without a pinned digest records it in the lock file ($VIDCLS_HOME/lock.json, default
    ~/.cache/vidcls/lock.json); later downloads are checked against it. The digest is printed,
    and for a URL entry that pins none, how to pin it in its zoo file.
    """
    from .cache import lock_path
    from .zoo import download, pin_hint

    verified = download(ref)
    how = f"recorded in {lock_path()}" if verified.recorded else "verified"
    err.print(f"{ref}: {verified.key} sha256 {verified.sha256} {how}", highlight=False, soft_wrap=True)
    hint = pin_hint(ref, verified.sha256)
    if hint is not None:
        err.print(hint, highlight=False, soft_wrap=True)
    out.print(str(verified.path.parent), highlight=False, soft_wrap=True)


def _arch_options(items: list[str]) -> dict[str, Any]:
    """['num_heads=12', 'shift_div=4'] -> {'num_heads': 12, 'shift_div': 4} (values read as JSON)."""
    arch = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad --arch {item!r}; expected KEY=VALUE")
        try:
            arch[key] = json.loads(value)
        except json.JSONDecodeError:
            arch[key] = value
    return arch


def _label_lines(path: Path) -> list[str]:
    """--labels FILE: one class name per line, in index order (blank lines skipped)."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read --labels {path}: {exc.strerror}") from None


@app.command("convert")
@guarded
def convert_command(
    src: Annotated[str, typer.Argument(help="Checkpoint file (.safetensors/.bin/.pth/.pt), a directory holding one, or hf://OWNER/REPO (optionally @REVISION).")],
    family: Annotated[str, typer.Option("--family", help="Target model family (divided, joint, xvit, vidtr, vidtr-compact, ...).")],
    output: Annotated[Path, typer.Option("--output", "-o", "--out", help="Model directory to write (config.json + model.safetensors); --out is an alias.")],
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Write even if some weights are missing (they keep their initialisation).")] = False,
    arch: Annotated[Optional[list[str]], typer.Option("--arch", help="KEY=VALUE hyper-parameter the checkpoint cannot tell (e.g. num_heads=12); repeatable.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Text file with one class name per line, in index order.")] = None,
) -> None:
    """Convert a foreign checkpoint into a vidcls model directory.

    Layouts: transformers TimeSformer / VideoMAE / ViViT (config.json beside the weights)
    and the X-ViT and VidTr authors' released checkpoints (VidTr-S/M/L into vidtr, C-VidTr-S/M
    into vidtr-compact). Pickle files are read
    with torch.load(weights_only=True) only. Prints the missing / unexpected keys; refuses
    to write a model with missing weights unless --allow-missing.
    """
    from .convert import convert_checkpoint

    report = convert_checkpoint(src, family, output, allow_missing=allow_missing, arch=_arch_options(arch or []),
                                labels=None if labels is None else _label_lines(labels))
    for what, keys in (("missing (initialised)", report.missing), ("unexpected (ignored)", report.unexpected)):
        if keys:
            err.print(f"{what}: {len(keys)}: {', '.join(keys)}", highlight=False, soft_wrap=True)
    err.print(f"converted {report.loaded} tensors ({report.layout} layout) into {report.family}: "
              f"wrote {report.out}", highlight=False, soft_wrap=True)


@app.command("export")
@guarded
def export_command(
    ref: Annotated[str, typer.Argument(help=r"Zoo name, hf://OWNER/REPO\[@REV] or a model directory.")],
    output: Annotated[Path, typer.Option("--out", "-o", "--output", help="The .onnx file to write (only once it passes the parity check).")],
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, help="Frames per clip baked into the graph (default: the model's recipe).")] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Frame size in pixels baked into the graph (default: the model's recipe).")] = None,
    batch: Annotated[str, typer.Option("--batch", **checked("--batch", r"dynamic|[1-9][0-9]*", "dynamic|N"), help="A symbolic batch axis, or a fixed batch size.")] = "dynamic",
    quantize: Annotated[Optional[str], typer.Option("--quantize", **one_of("--quantize", ("int8",)), help="int8: ONNX Runtime's dynamic quantisation of the linear layers (checked against fp32 torch on decoded sample clips).")] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", min=18, help="ONNX opset (default: torch's exporter's, 20 in torch 2.13; Gelu is a single op from 20).")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Local safetensors file replacing the model's weights.")] = None,
    allow_random: Annotated[bool, typer.Option("--allow-random", help="Export an architecture without trained weights (random initialisation), e.g. to benchmark it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export report as JSON to stdout.")] = False,
) -> None:
    """Export a model to ONNX for ONNX Runtime (`vidcls[onnx]`), fp32 or int8, checked against torch.

    The file carries the model's card (labels, input recipe, family, GMACs) in its ONNX
    metadata, so `--model FILE.onnx` works in predict, evaluate and benchmark. fp32 must
    match torch within 1e-4 (max |logit diff|, random clip); int8 must agree with fp32
    torch on the top-1 class of 8 decoded sample clips at least 90% of the time (KL and
    relative error printed). A file that fails is not written (exit 1).
    """
    from .export import export_model

    report = export_model(ref, output, frames=frames, size=size, batch=batch, quantize=quantize, opset=opset,
                          weights=weights, allow_random=allow_random)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    err.print(f"exported {report.name} ({report.family}, {report.frames}x{report.size}, batch {report.batch}, "
              f"opset {report.opset}, {report.quantize or 'fp32'}) in {report.seconds:.1f} s: "
              f"{report.bytes / 2**20:.1f} MiB", highlight=False, soft_wrap=True)
    err.print(f"parity: {report.parity.line()}", highlight=False, soft_wrap=True)
    out.print(str(report.path), highlight=False, soft_wrap=True)


LR_DEFAULTS = ", ".join(f"{lr:g} for {name}" for name, (lr, _) in OPTIMIZERS.items())
DECAY_DEFAULTS = ", ".join(f"{decay:g} {name}" for name, (_, decay) in OPTIMIZERS.items())


@app.command("train")
@guarded
def train_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture to fine-tune: zoo name, hf://OWNER/REPO or hf://OWNER/REPO@REV, or a model directory.")],
    train_data: Annotated[Path, typer.Option("--train", help="Training data: a folder with one sub-folder per class, or a list file ('path label' lines, or a CSV with path and label columns).")],
    val_data: Annotated[Path, typer.Option("--val", help="Validation data, same formats; only the training classes may appear.")],
    output: Annotated[Path, typer.Option("--output", "-o", "--out", help="Run directory: best model (config.json + model.safetensors), last/, metrics.jsonl, train.log; --out is an alias.")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs in all; with --resume, more than the run planned extends it.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per step and process (effective batch: x processes x --accumulate).")] = 8,
    lr: Annotated[Optional[float], typer.Option("--lr", help=f"Peak learning rate (default: {LR_DEFAULTS}).")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", **one_of("--optimizer", OPTIMIZERS), help="sgd: momentum 0.9, Nesterov.")] = "adamw",
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help=f"On Linear/conv weights only, never on norms, biases or embeddings (default: {DECAY_DEFAULTS}).")] = None,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", min=0, help="Linear warm-up length (at most half the run), then cosine decay to zero.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0, max=0.99)] = 0.1,
    clip_grad: Annotated[float, typer.Option("--clip-grad", min=0, help="Max gradient norm (0: no clipping).")] = 1.0,
    accumulate: Annotated[int, typer.Option("--accumulate", min=1, help="Batches per optimizer step (gradient accumulation).")] = 1,
    precision: Annotated[str, typer.Option("--precision", **one_of("--precision", PRECISIONS), help="bf16/fp16 run under autocast, fp16 with a gradient scaler.")] = "fp32",
    compile_model: Annotated[bool, typer.Option("--compile", help="Train through torch.compile.")] = False,
    init: Annotated[Optional[str], typer.Option("--init", help="none (random), imagenet, or a model REF whose weights to start from (a head for another class count is replaced); default: --model's own weights if it has any, else none.")] = None,
    inflate: Annotated[str, typer.Option("--inflate", **one_of("--inflate", INFLATIONS), help="With --init imagenet: put the image patch kernel on the central frame of each tubelet (central) or spread it evenly over the tubelet (average).")] = "central",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint, with the same options; a larger --epochs extends it (the learning-rate schedule is re-planned, see train.log).")] = False,
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes decoding videos (0: decode in the training process).")] = 4,
    device: Annotated[str, typer.Option("--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR), help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seeds initialisation, data order and augmentation; same seed, same run.")] = 0,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips; turn off when labels name a direction (Something-Something).")] = True,
    max_bad_fraction: Annotated[float, typer.Option("--max-bad-fraction", min=0, max=1, help="Stop when more than this share of a split cannot be decoded (each bad video is skipped and listed in train.log).")] = 0.05,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute each block's activations in the backward pass instead of keeping them: far less memory for long clips, about a third more compute, the same result (may change on --resume).")] = False,
    shuffle_frames: Annotated[bool, typer.Option("--shuffle-frames", hidden=True, help="Control experiment: frames of every clip in random order.")] = False,
) -> None:
    """Fine-tune a model on a video dataset; the output directory is a model for `vidcls predict`.

    Every epoch appends train loss, val loss, top-1, top-5, time and clips/s to
    OUTPUT/metrics.jsonl, keeps the best weights (by val top-1) in OUTPUT and the resumable
    state in OUTPUT/last. Ctrl-C or SIGTERM checkpoints and stops; --resume continues.
    Distributed: torchrun --nproc-per-node N -m vidcls train ...
    """
    import signal

    from .train import TrainConfig, train

    config = TrainConfig(model=model, train=train_data, val=val_data, output=output, epochs=epochs,
                         batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, clip_grad=clip_grad,
                         accumulate=accumulate, precision=precision, compile=compile_model, init=init, inflate=inflate,
                         resume=resume, workers=workers, device=device, seed=seed, flip=flip,
                         shuffle_frames=shuffle_frames, max_bad_fraction=max_bad_fraction,
                         grad_checkpointing=grad_checkpointing)
    result = train(config)
    if result.interrupted:
        raise typer.Exit(128 + signal.Signals[result.interrupted].value)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="vidcls")


if __name__ == "__main__":
    sys.exit(main())
