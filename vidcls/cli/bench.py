"""`vidcls benchmark` and `vidcls export`: measuring a model and writing it for another runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidcls.choices import (
    AUTO,
    DEVICE_METAVAR,
    DEVICE_PATTERN,
    EXPORT_FORMATS,
)
from vidcls.cli.app import checked, command, guarded, one_of
from vidcls.cli.predict import PrecisionOption, RuntimeOption
from vidcls.cli.render import bar_text, benchmark_tables, err, input_line, out, progress_bar, say, show
from vidcls.errors import UsageError


def int_list(text: str, option: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32]; anything else is a usage error naming the option."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"{option} must be a comma-separated list of positive integers, got {text!r}")
    return values


@command("benchmark")
@guarded
def benchmark_command(
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="REF[,REF...]",
        help="REF[,REF...]: zoo names, hf:// refs, model directories or exported .onnx / .xml files "
             "(timed on ONNX Runtime / OpenVINO, at their exported shape), measured side by side.",
    )],
    frames: Annotated[str, typer.Option(
        "--frames", metavar="N[,N...]",
        help="Comma-separated frame counts to sweep.",
    )] = "8,16,32",
    size: Annotated[int | None, typer.Option(
        "--size", min=16,
        help="Frame size in pixels (default: each model's input size, 224 for the paper models).",
    )] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per forward pass.")] = 1,
    device: Annotated[str, typer.Option(
        "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
        help="auto picks CUDA when available.",
    )] = "auto",
    precision: PrecisionOption = AUTO,
    runtime: RuntimeOption = "torch",
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed forward passes before timing.")] = 2,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed forward passes; the median is reported.")] = 5,
    compile_model: Annotated[bool, typer.Option(
        "--compile",
        help="Run the model through torch.compile (warm-up includes compilation).",
    )] = False,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print one JSON array (schema in docs/cli.md), one object per (model, frames) point.",
    )] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png",
        help="Write a PNG of GMACs, peak memory and latency vs frames (needs matplotlib, the plot extra).",
    )] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", metavar="FILE", help="Write the points as CSV.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1,
        help="CPU threads for the timed passes and the matmul rate (default: "
             "torch's, one per core); 1 gives steadier numbers on a busy machine.",
    )] = None,
    wide: Annotated[bool, typer.Option(
        "--wide",
        help="Every column (attention share, latency spread, CPU time, clips/s), at the table's full width.",
    )] = False,
    in_process: Annotated[bool, typer.Option(
        "--in-process",
        help="On CPU, measure in this process instead of a fresh one per "
             "point: quicker, but an out-of-memory point can end the run.",
    )] = False,
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
    from vidcls.api import benchmark
    from vidcls.bench import write_csv
    from vidcls.viz.plotting import require_matplotlib
    from vidcls.viz.scaling import write_plot

    if plot is not None:
        require_matplotlib()  # before the sweep, not after it
    refs = [ref.strip() for ref in model.split(",") if ref.strip()]
    sweep = int_list(frames, "--frames")

    with progress_bar() as progress:
        task = progress.add_task("benchmarking", total=len(refs) * len(sweep))

        def done(point) -> None:
            progress.update(task, advance=1, description=bar_text(f"benchmarked {point.model} T={point.frames}"))

        def warn(message: str) -> None:
            input_line("warning", "yellow", message)

        report = benchmark(refs, sweep, size, isolate=False if in_process else None, on_point=done,
                           on_warning=warn, batch_size=batch_size, device=device, precision=precision,
                           warmup=warmup, repeats=repeats, compile=compile_model, threads=threads, runtime=runtime)
    err.print(report.machine_line(), highlight=False, soft_wrap=True)
    for point in report.points:
        if point.error:
            say(err, f"{point.model}: {point.error}")
    if plot is not None:
        say(err, f"wrote {write_plot(report, plot)}")
    if csv_path is not None:
        say(err, f"wrote {write_csv(report, csv_path)}")
    if as_json:
        print(json.dumps([p.to_json() for p in report.points], indent=2))
        return
    for table in benchmark_tables(report, wide):
        show(out, table, wide)


@command("export")
@guarded
def export_command(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Zoo name, hf://OWNER/REPO[@REV] or a model directory.")],
    output: Annotated[Path, typer.Option(
        "--out", "-o", "--output", metavar="FILE",
        help="The .onnx file, or the OpenVINO FILE.xml (FILE.bin beside it) or directory (model.xml + model.bin) "
             "to write (only once it passes the parity check).",
    )],
    export_format: Annotated[str | None, typer.Option(
        "--format", **one_of("--format", EXPORT_FORMATS),
        help="onnx (ONNX Runtime, vidcls[onnx]) or openvino (an IR, vidcls[openvino]); default: openvino "
             "for --out FILE.xml, else onnx.",
    )] = None,
    frames: Annotated[int | None, typer.Option(
        "--frames", min=1,
        help="Frames per clip baked into the graph (default: the model's recipe).",
    )] = None,
    size: Annotated[int | None, typer.Option(
        "--size", min=16,
        help="Frame size in pixels baked into the graph (default: the model's recipe).",
    )] = None,
    batch: Annotated[str, typer.Option(
        "--batch", **checked("--batch", r"dynamic|[1-9][0-9]*", "dynamic|N"),
        help="A symbolic batch axis, or a fixed batch size.",
    )] = "dynamic",
    quantize: Annotated[str | None, typer.Option(
        "--quantize", **one_of("--quantize", ("int8",)),
        help="int8: ONNX Runtime's dynamic quantisation of the linear layers, or for openvino NNCF's "
             "post-training quantisation calibrated on --calibrate's clips (checked against fp32 torch on "
             "decoded sample clips).",
    )] = None,
    calibrate: Annotated[Path | None, typer.Option(
        "--calibrate", metavar="DIR",
        help="openvino int8: a folder of your clips to calibrate on (default: the sample clips of the check).",
    )] = None,
    opset: Annotated[int | None, typer.Option(
        "--opset", min=18,
        help="ONNX opset (default: torch's exporter's, 20 in torch 2.13; Gelu is a single op from 20).",
    )] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", metavar="FILE",
        help="Local safetensors file replacing the model's weights.",
    )] = None,
    allow_random: Annotated[bool, typer.Option(
        "--allow-random",
        help="Export an architecture without trained weights (random initialisation), e.g. to benchmark it.",
    )] = False,
    labels: Annotated[str | None, typer.Option(
        "--labels", metavar="NAMES",
        help="A model that reads label names (X-CLIP): the label set folded into the graph (default: its "
             "own), \"a,b,c\" or @FILE as for predict.",
    )] = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", metavar="TEMPLATE", help="With --labels: how each name is read, \"a video of {}\".",
    )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export report as JSON to stdout.")] = False,
) -> None:
    """Export a model for ONNX Runtime (`vidcls[onnx]`) or OpenVINO (`vidcls[openvino]`), fp32 or int8,
    checked against torch.

    The file carries the model's card (labels, input recipe, family, GMACs) in its ONNX
    metadata or OpenVINO rt_info, so `--model FILE` works in predict, evaluate and benchmark.
    fp32 must match torch within 1e-4 (max |logit diff|, random clip); int8 must agree with
    fp32 torch on the top-1 class of 8 decoded sample clips at least 90% of the time (KL and
    relative error printed). A file that fails is not written (exit 1).
    """
    from vidcls.export.formats import export_model

    report = export_model(ref, output, format=export_format, frames=frames, size=size, batch=batch,
                          quantize=quantize, opset=opset, calibrate=calibrate, weights=weights,
                          allow_random=allow_random, labels=labels, prompt=prompt)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    graph = f"opset {report.opset}" if report.opset is not None else "OpenVINO IR"
    say(err, f"exported {report.name} ({report.family}, {report.frames}x{report.size}, batch {report.batch}, "
             f"{graph}, {report.quantize or 'fp32'}) in {report.seconds:.1f} s: {report.bytes / 2**20:.1f} MiB")
    say(err, f"parity: {report.parity.line()}")
    say(out, report.path)
