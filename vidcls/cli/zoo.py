"""`vidcls models`, `download`, `convert` and `sample-clip`: the zoo, weights and inputs to try.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vidcls.choices import (
    DIRECTIONS,
)
from vidcls.cli.app import command, guarded, one_of
from vidcls.cli.render import err, models_tables, out, say, show
from vidcls.errors import UsageError

MAX_CLIP_BYTES = 1 << 30  # sample-clip draws every frame in memory, then encodes them


@command("models")
@guarded
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
    with_weights: Annotated[bool, typer.Option(
        "--with-weights",
        help="Also list where each model's weights come from in full (package:NAME, hf://OWNER/REPO@REV "
             "or a URL), the published top-1 and, with VIDCLS_ZOO, the zoo file of each entry.",
    )] = False,
) -> None:
    """List the zoo: every model name usable with --model (VIDCLS_ZOO adds your own zoo files).

    frames = frames per clip x sampling stride; views = clips x crops of the test protocol.
    """
    from vidcls.zoo import catalog  # vidcls.list_models, which does not import torch

    rows = catalog.list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for table in models_tables(rows, with_weights):
        show(out, table)


@command("sample-clip")
@guarded
def sample_clip_command(
    output: Annotated[Path, typer.Argument(help="Where to write the .mp4 clip.")],
    direction: Annotated[str, typer.Option(
        "--direction", **one_of("--direction", DIRECTIONS),
        help="Where the shape moves.",
    )] = "left",
    frames: Annotated[int, typer.Option("--frames", min=2, help="Number of frames.")] = 16,
    width: Annotated[int, typer.Option("--width", min=16, help="Frame width in pixels.")] = 128,
    height: Annotated[int, typer.Option("--height", min=16, help="Frame height in pixels.")] = 96,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for shape, colour and position.")] = 0,
) -> None:
    """Write a synthetic clip of a shape moving in one direction (input for demo-motion)."""
    from vidcls.video.synthetic import make_sample_clip

    if frames * width * height * 3 > MAX_CLIP_BYTES:  # the clip is drawn in memory before it is encoded
        raise UsageError(f"--frames x --width x --height x 3 bytes is above {MAX_CLIP_BYTES >> 20} MiB; make a "
                         f"smaller clip")

    path = make_sample_clip(output, direction=direction, frames=frames, height=height, width=width,
                            seed=seed)
    say(err, f"wrote {path} ({frames} frames, {width}x{height}, moving {direction})")


@command("download")
@guarded
def download_command(
    ref: Annotated[str, typer.Argument(
        help="Zoo name with downloadable weights, or hf://OWNER/REPO (optionally @REVISION).",
    )],
) -> None:
    """Prefetch a model's weights (and config) and verify their sha256; print where they are.

    Hub files go to the Hugging Face cache, with its settings: HF_HOME / HF_HUB_CACHE, HF_TOKEN,
    HF_HUB_OFFLINE. A zoo entry's file at a URL is downloaded (resuming a partial download),
    converted once and kept as a model directory in $VIDCLS_HOME/converted. A first download of
    a file without a pinned digest records it in the lock file ($VIDCLS_HOME/lock.json, default
    ~/.cache/vidcls/lock.json); later downloads are checked against it. The digest is printed,
    and for a URL entry that pins none, how to pin it in its zoo file.
    """
    from vidcls.zoo.cache import lock_path
    from vidcls.zoo.fetch import download, pin_hint

    verified = download(ref)
    how = f"recorded in {lock_path()}" if verified.recorded else "verified"
    say(err, f"{ref}: {verified.key} sha256 {verified.sha256} {how}")
    hint = pin_hint(ref, verified.sha256)
    if hint is not None:
        say(err, hint)
    say(out, verified.path.parent)


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


@command("convert")
@guarded
def convert_command(
    src: Annotated[str, typer.Argument(
        help="Checkpoint file (.safetensors/.bin/.pth/.pt), a directory "
             "holding one, or hf://OWNER/REPO (optionally @REVISION).",
    )],
    family: Annotated[str, typer.Option(
        "--family", metavar="FAMILY",
        help="Target model family (divided, joint, xvit, vidtr, vidtr-compact, ...).",
    )],
    output: Annotated[Path, typer.Option(
        "--output", "-o", "--out", metavar="DIR",
        help="Model directory to write (config.json + model.safetensors); --out is an alias.",
    )],
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing",
        help="Write even if some weights are missing (they keep their initialisation).",
    )] = False,
    arch: Annotated[list[str] | None, typer.Option(
        "--arch", metavar="KEY=VALUE",
        help="KEY=VALUE hyper-parameter the checkpoint cannot tell (e.g. num_heads=12); repeatable.",
    )] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", metavar="FILE",
        help="Text file with one class name per line, in index order.",
    )] = None,
) -> None:
    """Convert a foreign checkpoint into a vidcls model directory.

    Layouts: transformers TimeSformer / VideoMAE / ViViT (config.json beside the weights)
    and the X-ViT and VidTr authors' released checkpoints (VidTr-S/M/L into vidtr, C-VidTr-S/M
    into vidtr-compact). Pickle files are read
    with torch.load(weights_only=True) only. Prints the missing / unexpected keys; refuses
    to write a model with missing weights unless --allow-missing.
    """
    from vidcls.zoo.convert import convert_checkpoint

    report = convert_checkpoint(src, family, output, allow_missing=allow_missing, arch=_arch_options(arch or []),
                                labels=None if labels is None else _label_lines(labels))
    for what, keys in (("missing (initialised)", report.missing), ("unexpected (ignored)", report.unexpected)):
        if keys:
            say(err, f"{what}: {len(keys)}: {', '.join(keys)}")
    say(err, f"converted {report.loaded} tensors ({report.layout} layout) into {report.family}: wrote {report.out}")
