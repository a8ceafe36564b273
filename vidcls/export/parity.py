"""The check every exported model passes before it is written: the candidate against torch fp32.

One gate for every format (ONNX, OpenVINO), so "checked against torch" means the same thing
whichever runtime the file is for. fp32 must match torch within `FP32_TOLERANCE` (max
|logit difference|) on a random clip; int8 must agree with torch fp32 on the top-1 class of
decoded sample clips at least `INT8_MIN_AGREEMENT` of the time. An architecture exported with
random weights (to benchmark it) has near-equal logits whose top-1 flips on rounding noise,
so its int8 file is held to the logits' relative error (`INT8_MAX_RELATIVE_ERROR`) instead.

The sample clips are moving shapes (vidcls.video.synthetic) encoded, decoded and cut by the
model's recipe exactly as predict would feed them: the check sees real decoded pixels, not
noise. The same decoding turns a user's folder of clips into calibration data (`clip_views`).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vidcls.errors import UsageError, VidclsError
from vidcls.video.inputs import VideoInput, gather
from vidcls.zoo.modeldir import ModelCard

FP32_TOLERANCE = 1e-4  # max |logit difference| of an fp32 export against torch
INT8_MIN_AGREEMENT = 0.9  # top-1 agreement of an int8 export with torch fp32 on the sample clips
INT8_MAX_RELATIVE_ERROR = 0.1  # the check of an untrained model's int8 export (its top-1 is noise)
SAMPLE_CLIPS = 8  # decoded sample clips (two per direction) for the int8 check


@dataclass(frozen=True)
class Parity:
    """How closely an exported file reproduces the torch model (fp32 torch is the reference).

    fp32 exports: max_abs_diff on a random clip. int8 exports: on decoded sample clips,
    top-1 agreement, mean KL(torch || export) of the softmax, and the logits' relative error
    ||export - torch|| / ||torch||.
    """

    clips: int
    max_abs_diff: float
    top1_agreement: float | None = None
    kl: float | None = None
    relative_error: float | None = None
    trained: bool = True  # False: random weights, int8 judged by relative_error

    def line(self) -> str:
        if self.top1_agreement is None:
            return f"max |logit diff| {self.max_abs_diff:.2g} on {self.clips} random clip(s) (limit {FP32_TOLERANCE:g})"
        limit = f" (minimum {INT8_MIN_AGREEMENT:.0%})", f" (maximum {INT8_MAX_RELATIVE_ERROR:.0%}: random weights)"
        agreement, error = (limit[0], "") if self.trained else ("", limit[1])
        return (f"top-1 agreement {self.top1_agreement:.1%}{agreement} on {self.clips} decoded sample clips, "
                f"KL {self.kl:.2g}, logits' relative error {self.relative_error:.2%}{error}, "
                f"max |logit diff| {self.max_abs_diff:.2g}")

    def passed(self) -> bool:
        if self.top1_agreement is None:
            return self.max_abs_diff <= FP32_TOLERANCE
        if self.trained:
            return self.top1_agreement >= INT8_MIN_AGREEMENT
        return self.relative_error <= INT8_MAX_RELATIVE_ERROR


def random_clip(card: ModelCard, batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded random batch at the card's clip shape (the tracing example, the fp32 check)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, card.input.frames, card.input.size, card.input.size, generator=generator)


def check_parity(module: torch.nn.Module, candidate: torch.nn.Module, card: ModelCard, batch: str | int,
                 quantize: str | None, ref: str, trained: bool = True) -> Parity:
    """Run the candidate (a runtime module called like torch) against torch fp32; VidclsError when it fails.

    trained=False (random weights): an int8 file is judged by the logits' relative error."""
    if quantize is None:
        clips = random_clip(card, 1 if batch == "dynamic" else batch, seed=1)
        parity = compare(module, candidate, clips, batch, with_agreement=False)
    else:
        parity = dataclasses.replace(compare(module, candidate, sample_views(card, SAMPLE_CLIPS), batch,
                                             with_agreement=True),
                                     trained=trained)
    if not parity.passed():
        raise VidclsError(f"{ref}: the exported graph does not match the torch model ({parity.line()}); "
                          f"nothing written")
    return parity


def compare(module: torch.nn.Module, candidate: torch.nn.Module, views: torch.Tensor, batch: str | int,
            with_agreement: bool) -> Parity:
    expected, got = logits(module, views, batch), logits(candidate, views, batch)
    diff = float((got - expected).abs().max())
    if not with_agreement:
        return Parity(clips=len(views), max_abs_diff=diff)
    p, q = expected.log_softmax(-1), got.log_softmax(-1)
    return Parity(clips=len(views), max_abs_diff=diff,
                  top1_agreement=float((expected.argmax(-1) == got.argmax(-1)).float().mean()),
                  kl=float((p.exp() * (p - q)).sum(-1).mean()),
                  relative_error=float((got - expected).norm() / expected.norm()))


@torch.inference_mode()
def logits(model: torch.nn.Module, views: torch.Tensor, batch: str | int) -> torch.Tensor:
    """Logits of every view, in chunks of a fixed batch (the last one padded) or all at once."""
    if batch == "dynamic":
        return model(views).float()
    chunks = []
    for chunk in views.split(batch):
        padded = torch.cat([chunk, chunk[-1:].expand(batch - len(chunk), *chunk.shape[1:])])
        chunks.append(model(padded)[: len(chunk)].float())
    return torch.cat(chunks)


def clip_views(card: ModelCard, videos: Sequence[VideoInput]) -> Iterator[torch.Tensor]:
    """Each video decoded and cut by the card's recipe (one clip, centre crop), as predict would feed it:
    a (1, 3, T, H, W) tensor per video. A video that cannot be decoded is an error naming it."""
    from vidcls.inference.engine import Recipe, decode_views

    recipe = Recipe(card.input, clips=1, crops=1)
    for position, video in enumerate(videos):
        decoded = decode_views(position, video, recipe)
        if decoded.views is None:
            raise VidclsError(f"{video.name}: {decoded.error}")
        yield decoded.views


def write_sample_clips(card: ModelCard, directory: Path, clips: int = SAMPLE_CLIPS) -> list[VideoInput]:
    """Sample clips (vidcls.video.synthetic, the directions in turn) long enough for the card's recipe."""
    from vidcls.choices import DIRECTIONS
    from vidcls.video.synthetic import make_sample_clip

    spec, videos = card.input, []
    for i in range(clips):
        path = str(make_sample_clip(directory / f"{i}.mp4", direction=DIRECTIONS[i % len(DIRECTIONS)],
                                    frames=max(16, spec.frames * spec.stride), seed=i))
        videos.append(VideoInput(path, path))
    return videos


def sample_views(card: ModelCard, clips: int) -> torch.Tensor:
    """The int8 check's input: `clips` sample clips decoded by the card's recipe, (clips, 3, T, H, W)."""
    with tempfile.TemporaryDirectory(prefix="vidcls-samples-") as scratch:
        try:
            return torch.cat(list(clip_views(card, write_sample_clips(card, Path(scratch), clips))))
        except VidclsError as exc:
            raise VidclsError(f"sample clip for the int8 check: {exc}") from None


def calibration_videos(directory: str | Path) -> list[VideoInput]:
    """The videos under `--calibrate DIR` (searched like predict's folders); none is a usage error."""
    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"--calibrate {directory}: not a folder of video clips")
    videos = gather([path]).videos
    if not videos:
        raise UsageError(f"--calibrate {directory}: no video files in it")
    return videos
