"""`vidcls embed`: each video's vectors (the model's pre-logits), with predict's engine and options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidcls.choices import AUTO, VIEWS
from vidcls.cli.app import command, guarded, one_of
from vidcls.cli.predict import (
    BatchSizeOption,
    ClipsOption,
    CropsOption,
    DeviceOption,
    FramesOption,
    HopOption,
    PrecisionOption,
    PromptOption,
    ResumeOption,
    SamplingOption,
    ShardOption,
    StrideOption,
    ThreadsOption,
    WeightsOption,
    WindowOption,
    WorkersOption,
    reporting_interrupts,
    terminate_as_interrupt,
)
from vidcls.cli.render import VideoProgress, embedding_table, input_line, out, run_done_line
from vidcls.errors import UsageError


@command("embed")
@guarded
def embed_command(
    model: Annotated[str, typer.Option(
        "--model", "-m",
        help=r"Zoo name, hf://OWNER/REPO\[@REV] or a model directory (an exported .onnx gives logits only).",
    )],  # \[: not rich markup
    videos: Annotated[list[str] | None, typer.Argument(
        help="Video files, folders (searched for videos), URLs (http(s)://, rtsp://), - for stdin, or @LIST "
             "(a file of inputs, one per line); none with --text.",
        metavar="VIDEO", show_default=False,
    )] = None,
    views: Annotated[str, typer.Option(
        "--views", **one_of("--views", VIEWS),
        help="mean: one vector per video, the mean of its views' pre-logits; all: one per view (clips x crops).",
    )] = "mean",
    normalize: Annotated[bool, typer.Option(
        "--normalize", help="Unit-length vectors (after averaging the views): dot products are cosine similarities.",
    )] = False,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = AUTO,
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o",
        help="Write each video's vectors as it completes: .jsonl or .json (records with an embedding "
             "list), or .npy (float32 rows, with FILE.index.jsonl: one record per video, its row and rows).",
    )] = None,
    resume: ResumeOption = False,
    shard: ShardOption = None,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print one JSON array (schema in docs/cli.md), vectors included, to stdout; not with --output.",
    )] = False,
    timeline: Annotated[bool, typer.Option(
        "--timeline",
        help="One vector per window covering the video (one pass over the file), with its start_s/end_s.",
        rich_help_panel="Long videos",
    )] = False,
    window: WindowOption = None,
    hop: HopOption = None,
    text: Annotated[str | None, typer.Option(
        "--text", metavar="NAMES",
        help="Embed these texts instead of videos, in the space of the model's video embeddings (a model that "
             "reads text: X-CLIP): \"cooking,playing guitar\" or @FILE (one a line); prints JSON or writes "
             "--output .json/.jsonl.",
        rich_help_panel="Open vocabulary",
    )] = None,
    prompt: PromptOption = None,
) -> None:
    """Embed videos: the model's pre-logits (the input of its classifier), for search,
    clustering, linear probes and localisation.

    A video that cannot be decoded or embedded is reported on stderr (exit code 1), has a
    record with its error and no vector, and the others are still embedded. The vectors'
    dimension, model, REF, recipe and vidcls version are in every record's `meta`.
    """
    from vidcls.api import embed_run

    if as_json and output is not None:
        raise UsageError("--json prints the vectors and --output writes them: give one of them")
    if text is not None:
        if videos:
            raise UsageError("--text embeds texts, not videos: give videos or --text, not both")
        embed_text_command(text, model, prompt, normalize, device, weights, output)
        return
    if not videos:
        raise UsageError("give the videos to embed (or --text NAMES)")
    terminate_as_interrupt()
    with VideoProgress("embedded") as progress, reporting_interrupts(progress, output):
        run = embed_run(videos, model, weights=weights, views=views, normalize=normalize, timeline=timeline,
                        window_s=window, hop_s=hop, clips=clips, crops=crops, frames=frames, stride=stride,
                        sampling=sampling, device=device, precision=precision, batch_size=batch_size,
                        workers=workers, threads=threads, output=output, resume=resume, shard=shard,
                        on_start=progress.on_start, on_result=progress.on_result)
    failed = progress.failed
    if run.skipped_note:
        input_line("note", "cyan", run.skipped_note)
    if as_json:
        print(json.dumps(run.to_json()))
    elif output is None and failed < len(run.embeddings):
        out.print(embedding_table(run.embeddings, run.meta))
    if output is not None:
        run_done_line("embedded", run, len(run.embeddings), failed)
    if failed:
        raise typer.Exit(1)


def embed_text_command(text: str, model: str, prompt: str | None, normalize: bool, device: str,
                       weights: Path | None, output: Path | None) -> None:
    """embed --text: one JSON record per text (text, prompt, embedding, meta), to stdout or --output."""
    from vidcls.api import embed_text
    from vidcls.fileio import write_text_atomic

    vectors, meta = embed_text(text, model, weights=weights, device=device, prompt=prompt, normalize=normalize)
    records = [vector.to_json(meta) for vector in vectors]
    if output is None:
        print(json.dumps(records))
    elif output.suffix == ".jsonl":
        write_text_atomic(output, "".join(json.dumps(record) + "\n" for record in records))
    elif output.suffix == ".json":
        write_text_atomic(output, json.dumps(records) + "\n")
    else:
        raise UsageError(f"--output {output}: text embeddings are written as .json or .jsonl")
    if output is not None:
        input_line("done", "green", f"embedded {len(records)} texts: {output}")
