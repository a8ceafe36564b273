"""Write frames as a video file: the one encoder behind sample clips, synthetic data and annotated videos.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import av.error
import torch

from vidcls.errors import VidclsError
from vidcls.fileio import atomic_file

# ----------------------------------------------------------------------------- writing


def pad_to_even(frames: torch.Tensor) -> torch.Tensor:
    """Pad (T, H, W, 3) by repeating the last row/column so H and W are even (yuv420p needs it).

    Padding rather than cropping keeps every rendered pixel, so the moving shape is never cut.
    """
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h:
        frames = torch.cat([frames, frames[:, -1:]], dim=1)
    if pad_w:
        frames = torch.cat([frames, frames[:, :, -1:]], dim=2)
    return frames


def write_video(path: str | Path, frames: torch.Tensor, fps: float = 25, codec: str = "libx264",
                crf: int = 18, gop: int | None = None) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames held in memory (synthetic clips); see encode_frames."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {tuple(frames.shape)} {frames.dtype}")
    encode_frames(path, frames.cpu(), tuple(frames.shape[1:3]), fps, codec=codec, crf=crf, gop=gop)


def encode_frames(path: str | Path, frames: Iterable[torch.Tensor], size: tuple[int, int], fps: float,
                  codec: str = "libx264", crf: int = 18, gop: int | None = None) -> Path:
    """Encode uint8 (H, W, 3) RGB frames of `size` (height, width) as yuv420p, as they come: a
    generator (the annotated video) never holds the whole video. Odd sizes are padded to even
    (pad_to_even), which yuv420p needs.

    `crf` is the x264/x265 quality (0 lossless, 18 visually clean, higher is smaller); `gop`
    the most frames between keyframes (default: the codec's, 250 for x264), which sets how far
    apart a sparse reader can seek.

    The file appears atomically: it is written under a temporary name in the same directory
    and renamed into place, so an interrupted run never leaves a half-written video. An error
    of the encoder or muxer is one VidclsError naming the file; one raised by `frames` itself
    (a decoding error of the source) passes through as it is.
    """
    path = Path(path)
    try:
        with atomic_file(path) as tmp, av.open(str(tmp), "w") as container:  # the muxer follows the suffix
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = size[0] + size[0] % 2, size[1] + size[1] % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            if gop is not None:
                stream.codec_context.gop_size = gop
            for frame in frames:
                picture = pad_to_even(frame[None])[0].contiguous().numpy()
                container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
            container.mux(stream.encode())
    except (av.error.FFmpegError, ValueError) as err:
        raise VidclsError(f"cannot write video {path}: {getattr(err, 'strerror', None) or err}") from err
    return path
