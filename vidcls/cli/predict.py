"""`vidcls predict` and `vidcls evaluate`: the options they share (and those `vidcls embed`
shares with predict) are declared once here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from vidcls.choices import (
    AUTO,
    CROPS,
    DEVICE_METAVAR,
    DEVICE_PATTERN,
    RUN_PRECISIONS,
    RUNTIMES,
    SAMPLINGS,
)
from vidcls.cli.app import checked, command, fail, guarded, held_by_command, one_of
from vidcls.cli.render import (
    VideoProgress,
    done_line,
    evaluation_tables,
    input_line,
    interrupted_message,
    out,
    prediction_table,
    run_done_line,
    segments_table,
    show,
)
from vidcls.errors import UsageError, printable
from vidcls.inference.preflight import Placement, checked_output, done_records, preflight, writing

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
    "--precision", **one_of("--precision", RUN_PRECISIONS),
    help="auto: bf16 where the device runs it natively (a CPU with AMX or AVX512-BF16, a CUDA GPU of "
         "compute capability 8.0+), else fp32, the exact path; bf16/fp16 cast the weights once. The "
         "choice and its reason are in the cost line and --json.",
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
    help="Processes decoding videos ahead of the model (default on CPU: the split of the cores that the rates "
         "of decoding and of the model at its precision and runtime make fastest, from one per core for a cheap "
         "model to none, decoding in this process, for a heavy one on few cores; with CUDA: all cores but two; "
         "0: decode in this process).",
)]
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", min=1,
    help="Torch threads of the model process (default on CPU: the cores that decoding does not need, at "
         "least 1; with CUDA: one per core).",
)]
WeightsOption = Annotated[Path | None, typer.Option(
    "--weights", metavar="FILE",
    help="Local safetensors file replacing the model's weights.",
)]
LabelsOption = Annotated[str | None, typer.Option(
    "--labels", metavar="NAMES",
    help="Classify over these names instead (a model that reads label names: X-CLIP): \"cooking,repairing a "
         "bike\" (comma-separated) or @FILE (one name a line).",
    rich_help_panel="Open vocabulary",
)]
PromptOption = Annotated[str | None, typer.Option(
    "--prompt", metavar="TEMPLATE",
    help="How each label name is read, {} standing for the name: \"a video of {}\" (default: the checkpoint's "
         "convention, the bare name for X-CLIP).",
    rich_help_panel="Open vocabulary",
)]
# Options predict and embed share (the streaming, resumable, sharded runs over many videos).
DeviceOption = Annotated[str, typer.Option(
    "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
    help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.",
)]
ResumeOption = Annotated[bool, typer.Option(
    "--resume",
    help="Continue --output: skip the videos already in it (a torn last line is redone).",
)]
ShardOption = Annotated[str | None, typer.Option(
    "--shard", metavar="I/N",
    help="Take every N-th video from position I of the input list "
         "(0 <= I < N); under torchrun each process takes its own.",
)]
VideosArgument = Annotated[list[str], typer.Argument(
    help="Video files, folders (searched for videos), URLs (http(s)://, "
         "rtsp://), - for stdin, or @LIST (a file of inputs, one per line).",
    metavar="VIDEO", show_default=False,
)]
WindowOption = Annotated[float | None, typer.Option(
    "--window", min=0.001, metavar="SECONDS",
    help="Window length (default: the model's clip span, frames x stride "
         "/ fps, or 2 s for segment sampling); implies --timeline.",
    rich_help_panel="Long videos",
)]
HopOption = Annotated[float | None, typer.Option(
    "--hop", min=0.001, metavar="SECONDS",
    help="Time between window starts (default: half the window; at most the window); implies --timeline.",
    rich_help_panel="Long videos",
)]


def terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job) ends a run like Ctrl-C: finished results are kept."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def reporting_interrupts(progress: VideoProgress, output: Path | None) -> Iterator[None]:
    """Ctrl-C or SIGTERM during a run: the `done:` line of what --output holds, then one line saying
    how far the run got and that --resume continues it (exit 130), as train says where it saved."""
    try:
        yield
    except KeyboardInterrupt:
        if output is not None:
            done_line(progress.done, progress.verb, progress.failed, output)
        raise fail(interrupted_message(progress, output), 130) from None


@command("predict")
@guarded
def predict_command(
    videos: VideosArgument,
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="REF",
        help="Zoo name, hf://OWNER/REPO[@REV], a model directory, or an exported .onnx file or "
             "OpenVINO .xml (or a directory holding model.onnx or model.xml).",
    )],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many labels to show per video.")] = 5,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = AUTO,
    runtime: RuntimeOption = "torch",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    prompt: PromptOption = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Write one result per video as it completes: .jsonl, .json or .csv "
             "(by suffix); every line is flushed, Ctrl-C keeps the finished ones.",
    )] = None,
    resume: ResumeOption = False,
    shard: ShardOption = None,
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
    window: WindowOption = None,
    hop: HopOption = None,
    smooth: Annotated[int, typer.Option(
        "--smooth", min=1, metavar="N",
        help="Average the probabilities over N consecutive windows before labelling; implies --timeline when above 1.",
        rich_help_panel="Long videos",
    )] = 1,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png",
        help="Draw the timeline as PNG (with several videos: FILE-<video>.png); needs matplotlib; implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
    out_video: Annotated[Path | None, typer.Option(
        "--out-video", metavar="FILE.mp4",
        help="Write the video again with the current window's top-1 label and score on every "
             "frame (H.264, the input's audio copied as it is; with several videos: FILE-<video>.mp4); "
             "implies --timeline.",
        rich_help_panel="Long videos",
    )] = None,
    no_audio: Annotated[bool, typer.Option(
        "--no-audio",
        help="With --out-video: leave the input's audio out.",
        rich_help_panel="Long videos",
    )] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS",
        help="Classify on a Ray cluster with Ray Data (docs/ray.md; pip install 'vidcls[ray]'): auto (the "
             "cluster this node belongs to), local (start one here) or ray://HOST:PORT; needs --output FILE "
             "(written here, in input order) or FOLDER (Ray's JSON files).",
        rich_help_panel="Ray cluster",
    )] = None,
    num_cpus: Annotated[float, typer.Option(
        "--num-cpus", min=0.01, help="With --ray: CPUs per actor (its torch threads).",
        rich_help_panel="Ray cluster",
    )] = 1.0,
    num_gpus: Annotated[float, typer.Option(
        "--num-gpus", min=0, help="With --ray: GPUs per actor (0.25: four actors share a GPU).",
        rich_help_panel="Ray cluster",
    )] = 0.0,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=1, help="With --ray: actors (default: as many as the cluster fits).",
        rich_help_panel="Ray cluster",
    )] = None,
    batch_videos: Annotated[int, typer.Option(
        "--batch-videos", min=1, help="With --ray: videos per map_batches call (Ray retries it as a whole).",
        rich_help_panel="Ray cluster",
    )] = 8,
) -> None:
    """Classify videos and print the top-k labels of each.

    The softmax is averaged over clips x crops views. A video that cannot be decoded or
    classified is reported on stderr (exit code 1) and the others are still classified.
    With --output, results stream to the file and stdout gets only what --json asks for.
    """
    held_by_command(writing(checked_output(output), Placement.of(shard)))  # one run per --output: a second is exit 2
    missing = preflight(videos, output, resume, shard)  # refusals first: no torch, no model yet
    if missing is not None and output is None and not as_json and ray is None:
        for name in missing:
            input_line("error", "red", f"{printable(name)}: file not found")
        raise typer.Exit(1)
    from vidcls.api import predict_run
    from vidcls.bench import cost_line
    from vidcls.inference.options import TimelineOptions

    terminate_as_interrupt()
    over_time = timeline or smooth > 1 or any(v is not None for v in (window, hop, plot, out_video))
    if ray is not None:
        from vidcls.inference.options import RunOptions
        from vidcls.inference.ray import RayOptions

        elsewhere = {"--timeline and its options": over_time or no_audio, "--shard": shard, "--workers": workers,
                     "--device": device != "auto", "--json": as_json}
        options = RunOptions(top_k=top_k, clips=clips, crops=crops, frames=frames, stride=stride, sampling=sampling,
                             precision=precision, batch_size=batch_size, threads=threads, labels=labels,
                             prompt=prompt)
        run_on_ray(videos, model, output, options, RayOptions(ray, num_cpus, num_gpus, concurrency, batch_videos),
                   weights, resume, [flag for flag, given in elsewhere.items() if given])
        return
    options = TimelineOptions(window, hop, smooth, plot, out_video, audio=not no_audio) if over_time else None
    with VideoProgress("classified") as progress, reporting_interrupts(progress, output):
        run = predict_run(videos, model, weights=weights, top_k=top_k, clips=clips, crops=crops,
                          frames=frames, stride=stride, sampling=sampling, device=device,
                          precision=precision, runtime=runtime, batch_size=batch_size, workers=workers,
                          threads=threads, labels=labels, prompt=prompt, output=output, resume=resume,
                          shard=shard, timeline=options, on_start=progress.on_start, on_result=progress.on_result)
    failed = progress.failed
    if run.skipped_note:
        input_line("note", "cyan", run.skipped_note)
    if as_json:
        print(json.dumps(run.to_json(), indent=2))
    elif output is None and failed < len(run.predictions):
        show(out, segments_table(run.predictions) if options else prediction_table(run.predictions))
        if options is None:  # a timeline's cost is per window, not the per-video line
            out.print(cost_line(run.cost, [p.timing_ms for p in run.predictions if not p.error]), highlight=False,
                      soft_wrap=True)
    if output is not None:
        run_done_line("classified", run, len(run.predictions), failed)
    if failed:
        raise typer.Exit(1)


def run_on_ray(videos: list[str], model: str, output: Path | None, options: Any, cluster: Any,
               weights: Path | None, resume: bool, refused: list[str]) -> None:
    """predict --ray: the run on a Ray cluster (vidcls.inference.ray), reported as predict reports an
    --output run: one line per failed video, the done: line, exit 1 if any failed."""
    from vidcls.inference.ray import ray_predict

    if refused:
        raise UsageError(f"--ray does not take {', '.join(refused)} (the cluster places the work; the timeline "
                         f"runs without --ray)")
    if output is None:
        raise UsageError("--ray needs --output: a FILE (.jsonl, .json, .csv, written here in input order) "
                         "or a FOLDER (Ray's JSON files, written by the cluster)")
    with VideoProgress("classified") as progress, reporting_interrupts(progress, output):
        run = ray_predict(videos, model, output, options=options, cluster=cluster, weights=weights, resume=resume,
                          on_start=progress.on_start, on_result=progress.on_result)
    done_line(run.classified, "classified", run.failed, output, run.resumed,
              f"; {run.actors} Ray actors, {run.seconds:.1f} s")
    if run.failed:
        raise typer.Exit(1)


@command("evaluate")
@guarded
def evaluate_command(
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="REF",
        help="Zoo name, hf://OWNER/REPO[@REV], a model directory, or an exported .onnx file or OpenVINO .xml.",
    )],
    data: Annotated[Path, typer.Option(
        "--data", metavar="DATA",
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
    precision: PrecisionOption = AUTO,
    runtime: RuntimeOption = "torch",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    labels: Annotated[str | None, typer.Option(
        "--labels", metavar="NAMES",
        help="With a model that reads label names (X-CLIP, evaluated zero-shot): the label set, which must "
             "hold the data's classes (default: the data's class names); NAMES or @FILE as for predict.",
        rich_help_panel="Open vocabulary",
    )] = None,
    prompt: PromptOption = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Per-video predictions (with the true label), streamed: .jsonl, .json or .csv.",
    )] = None,
    resume: Annotated[bool, typer.Option(
        "--resume",
        help="Continue --output: skip the videos already in it; the summary covers them all.",
    )] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png",
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
    accuracy. A data label the model does not have stops the run before any decoding. A model
    that reads label names (X-CLIP) is evaluated zero-shot, on the data's class names.
    """
    held_by_command(writing(checked_output(output), Placement()))  # one run per --output
    done_records(checked_output(output), Placement(), resume)  # refusals first: no torch, no model yet
    from vidcls.api import evaluate_run

    terminate_as_interrupt()
    with VideoProgress("evaluated") as progress, reporting_interrupts(progress, output):
        evaluation = evaluate_run(model, data, weights=weights, device=device, output=output, resume=resume,
                                  plot=plot, clips=clips, crops=crops, frames=frames, stride=stride,
                                  sampling=sampling, precision=precision, runtime=runtime,
                                  batch_size=batch_size, workers=workers, threads=threads, labels=labels,
                                  prompt=prompt, on_start=progress.on_start, on_result=progress.on_result)
    summary = evaluation.summary
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for table in evaluation_tables(summary):
            show(out, table)
    if plot is not None:
        input_line("done", "green", f"confusion matrix: {printable(str(plot))}")
    if summary.failed:
        raise typer.Exit(1)
