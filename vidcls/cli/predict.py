"""`vidcls predict` and `vidcls evaluate`: the options they share are declared once here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vidcls.choices import (
    CROPS,
    DEVICE_METAVAR,
    DEVICE_PATTERN,
    PRECISIONS,
    RUNTIMES,
    SAMPLINGS,
)
from vidcls.cli.app import app, checked, guarded, one_of
from vidcls.cli.render import VideoProgress, evaluation_tables, input_line, out, prediction_table, segments_table
from vidcls.errors import printable

# Options predict and evaluate share: one declaration, one help text.
ClipsOption = Annotated[int | None, typer.Option(
    "--clips", min=1,
    help="Temporal clips per video (default: the model's recipe).",
)]
CropsOption = Annotated[int | None, typer.Option(
    "--crops", **one_of("--crops", CROPS),
    help="Spatial crops per clip: 1 (centre) or 3 (left/centre/right); default: the model's recipe.",
)]
FramesOption = Annotated[int | None, typer.Option(
    "--frames", min=1,
    help="Frames per clip (default: the model's recipe; other counts interpolate the time embedding, with a warning).",
)]
StrideOption = Annotated[int | None, typer.Option(
    "--stride", min=1,
    help="Frames between samples with dense sampling (default: the model's recipe).",
)]
SamplingOption = Annotated[str | None, typer.Option(
    "--sampling", **one_of("--sampling", SAMPLINGS),
    help="segment: frames spread over the whole video; dense: frames "
         "x stride consecutive (default: the model's recipe).",
)]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", **one_of("--precision", PRECISIONS),
    help="bf16/fp16 run under autocast; fp32 is right on CPUs.",
)]
RuntimeOption = Annotated[str, typer.Option(
    "--runtime", **one_of("--runtime", RUNTIMES),
    help="What runs the model: torch, or openvino (CPU; converted once and cached under $VIDCLS_HOME, "
         "needs the openvino extra). An exported .onnx / .xml model runs on its own runtime.",
)]
BatchSizeOption = Annotated[int, typer.Option(
    "--batch-size", min=1,
    help="Views per forward pass (views of consecutive videos are batched together).",
)]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=0,
    help="Processes decoding videos ahead of the model (default on CPU: one per core for a cheap model (under 1 "
         "GMAC per video), else a quarter of the cores; with CUDA: all cores but two; 0: decode in this process).",
)]
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", min=1,
    help="Torch threads of the model process (default: 1 for a cheap "
         "model on CPU, whose cores decode; else one per core).",
)]
WeightsOption = Annotated[Path | None, typer.Option(
    "--weights",
    help="Local safetensors file replacing the model's weights.",
)]


def terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job) ends a run like Ctrl-C: finished results are kept."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command("predict")
@guarded
def predict_command(
    videos: Annotated[list[str], typer.Argument(
        help="Video files, folders (searched for videos), URLs (http(s)://, "
             "rtsp://), - for stdin, or @LIST (a file of inputs, one per line).",
        metavar="VIDEO", show_default=False,
    )],
    model: Annotated[str, typer.Option(
        "--model", "-m",
        help=r"Zoo name, hf://OWNER/REPO\[@REV], a model directory, or an exported .onnx file or "
             "OpenVINO .xml (or a directory holding model.onnx or model.xml).",
    )],  # \[: not rich markup
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many labels to show per video.")] = 5,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: Annotated[str, typer.Option(
        "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
        help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.",
    )] = "auto",
    precision: PrecisionOption = "fp32",
    runtime: RuntimeOption = "torch",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o",
        help="Write one result per video as it completes: .jsonl, .json or .csv "
             "(by suffix); every line is flushed, Ctrl-C keeps the finished ones.",
    )] = None,
    resume: Annotated[bool, typer.Option(
        "--resume",
        help="Continue --output: skip the videos already in it (a torn last line is redone).",
    )] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N",
        help="Classify every N-th video from position I of the input list "
             "(0 <= I < N); under torchrun each process takes its own.",
    )] = None,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print one JSON array (schema in docs/cli.md) to stdout.",
    )] = False,
    timeline: Annotated[bool, typer.Option(
        "--timeline",
        help="Label each video over time: the model's recipe on windows covering the video (one pass "
             "over the file); the table shows segments of the same top-1, the JSON each window too.",
        rich_help_panel="Long videos",
    )] = False,
    window: Annotated[float | None, typer.Option(
        "--window", min=0.001, metavar="SECONDS",
        help="Window length (default: the model's clip span, frames x stride "
             "/ fps, or 2 s for segment sampling); implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
    hop: Annotated[float | None, typer.Option(
        "--hop", min=0.001, metavar="SECONDS",
        help="Time between window starts (default: half the window; at most the window); implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
    smooth: Annotated[int, typer.Option(
        "--smooth", min=1, metavar="N",
        help="Average the probabilities over N consecutive windows before labelling; implies --timeline when above 1.",
        rich_help_panel="Long videos",
    )] = 1,
    plot: Annotated[Path | None, typer.Option(
        "--plot",
        help="Draw the timeline as PNG (with several videos: FILE-<video>.png); needs matplotlib; implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
    out_video: Annotated[Path | None, typer.Option(
        "--out-video",
        help="Write the video again with the current window's top-1 label and score on every "
             "frame (H.264; with several videos: FILE-<video>.mp4); implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
) -> None:
    """Classify videos and print the top-k labels of each.

    The softmax is averaged over clips x crops views. A video that cannot be decoded or
    classified is reported on stderr (exit code 1) and the others are still classified.
    With --output, results stream to the file and stdout gets only what --json asks for.
    """
    from vidcls.api import TimelineOptions, predict_run
    from vidcls.bench import cost_line

    terminate_as_interrupt()
    over_time = timeline or smooth > 1 or any(v is not None for v in (window, hop, plot, out_video))
    options = TimelineOptions(window, hop, smooth, plot, out_video) if over_time else None
    with VideoProgress("classified") as progress:
        run = predict_run(videos, model, weights=weights, top_k=top_k, clips=clips, crops=crops,
                          frames=frames, stride=stride, sampling=sampling, device=device,
                          precision=precision, runtime=runtime, batch_size=batch_size, workers=workers,
                          threads=threads, output=output, resume=resume, shard=shard, timeline=options,
                          on_start=progress.on_start, on_result=progress.on_result)
    failed = progress.failed
    if run.skipped_note:
        input_line("note", "cyan", run.skipped_note)
    if as_json:
        print(json.dumps(run.to_json(), indent=2))
    elif output is None and failed < len(run.predictions):
        out.print(segments_table(run.predictions) if options else prediction_table(run.predictions))
        if options is None:  # a timeline's cost is per window, not the per-video line
            out.print(cost_line(run.cost, [p.timing_ms for p in run.predictions if not p.error]), highlight=False)
    if output is not None:
        resumed = f", {run.resumed} already there" if run.resumed else ""
        merged = f"; merged {run.merged} results from all processes" if run.merged is not None else ""
        input_line("done", "green", f"{len(run.predictions)} classified ({failed} failed){resumed}: "
                    f"{printable(str(output))}{merged}")
    if failed:
        raise typer.Exit(1)


@app.command("evaluate")
@guarded
def evaluate_command(
    model: Annotated[str, typer.Option(
        "--model", "-m",
        help=r"Zoo name, hf://OWNER/REPO\[@REV], a model directory, or an exported .onnx file or OpenVINO .xml.",
    )],  # \[: not rich markup
    data: Annotated[Path, typer.Option(
        "--data",
        help="Labelled videos: a folder with one sub-folder per class, or a list file "
             "('path label' lines, or a CSV with path and label columns), as for train.",
    )],
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: Annotated[str, typer.Option(
        "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
        help="auto picks CUDA when available.",
    )] = "auto",
    precision: PrecisionOption = "fp32",
    runtime: RuntimeOption = "torch",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o",
        help="Per-video predictions (with the true label), streamed: .jsonl, .json or .csv.",
    )] = None,
    resume: Annotated[bool, typer.Option(
        "--resume",
        help="Continue --output: skip the videos already in it; the summary covers them all.",
    )] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot",
        help="Write the confusion matrix as PNG (needs matplotlib, the plot extra).",
    )] = None,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print the summary as one JSON object (schema in docs/cli.md).",
    )] = False,
) -> None:
    """Measure a model's accuracy on labelled videos: top-1, top-5, mean class accuracy,
    per-class accuracy and a confusion matrix.

    Videos that cannot be decoded are counted and listed (exit code 1), never part of an
    accuracy. A data label the model does not have stops the run before any decoding.
    """
    from vidcls.api import evaluate_run

    terminate_as_interrupt()
    with VideoProgress("evaluated") as progress:
        evaluation = evaluate_run(model, data, weights=weights, device=device, output=output, resume=resume,
                                  plot=plot, clips=clips, crops=crops, frames=frames, stride=stride,
                                  sampling=sampling, precision=precision, runtime=runtime,
                                  batch_size=batch_size, workers=workers,
                                  threads=threads, on_start=progress.on_start, on_result=progress.on_result)
    summary = evaluation.summary
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for table in evaluation_tables(summary):
            out.print(table)
    if plot is not None:
        input_line("done", "green", f"confusion matrix: {printable(str(plot))}")
    if summary.failed:
        raise typer.Exit(1)
