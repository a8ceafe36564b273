"""Write frames as a video file: the one encoder behind sample clips, synthetic data and annotated videos.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import av.error
import numpy as np
from av.container import InputContainer, OutputContainer

from vidcls.errors import VidclsError
from vidcls.fileio import atomic_file

if TYPE_CHECKING:  # frames may be torch tensors, but writing a clip (`vidcls sample-clip`) never imports torch
    import torch

# ----------------------------------------------------------------------------- writing


def pad_to_even(frames: Any) -> Any:
    """Pad (T, H, W, 3) frames (a numpy array or a torch tensor) by repeating the last row/column so
    H and W are even (yuv420p needs it).

    Padding rather than cropping keeps every rendered pixel, so the moving shape is never cut.
    """
    if isinstance(frames, np.ndarray):
        cat = np.concatenate
    else:
        import torch

        cat = torch.cat
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h:
        frames = cat([frames, frames[:, -1:]], 1)
    if pad_w:
        frames = cat([frames, frames[:, :, -1:]], 2)
    return frames


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float = 25, codec: str = "libx264",
                crf: int = 18, gop: int | None = None) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames held in memory (synthetic clips; numpy or torch); see encode_frames."""
    if str(frames.dtype) not in ("uint8", "torch.uint8") or frames.ndim != 4 or frames.shape[-1] != 3 \
            or not len(frames):
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {tuple(frames.shape)} {frames.dtype}")
    if not isinstance(frames, np.ndarray):
        frames = frames.cpu().numpy()
    encode_frames(path, frames, tuple(frames.shape[1:3]), fps, codec=codec, crf=crf, gop=gop)


def encode_frames(path: str | Path, frames: Iterable[np.ndarray | torch.Tensor], size: tuple[int, int], fps: float,
                  codec: str = "libx264", crf: int = 18, gop: int | None = None,
                  audio_from: str | Path | None = None) -> Path:
    """Encode uint8 (H, W, 3) RGB frames of `size` (height, width) as yuv420p, as they come: a
    generator (the annotated video) never holds the whole video. Odd sizes are padded to even
    (pad_to_even), which yuv420p needs.

    `crf` is the x264/x265 quality (0 lossless, 18 visually clean, higher is smaller); `gop`
    the most frames between keyframes (default: the codec's, 250 for x264), which sets how far
    apart a sparse reader can seek. `audio_from`: a video whose first audio stream is copied
    in as it is (AudioCopy: remuxed, not re-encoded), for frames that are that video's own.

    The file appears atomically: it is written under a temporary name in the same directory
    and renamed into place, so an interrupted run never leaves a half-written video. An error
    of the encoder or muxer is one VidclsError naming the file; one raised by `frames` itself
    (a decoding error of the source) passes through as it is.
    """
    path = Path(path)
    copying = False  # whether the audio copy is what failed (for the hint)
    try:
        with contextlib.ExitStack() as stack:
            try:
                tmp = stack.enter_context(atomic_file(path))
                container = stack.enter_context(av.open(str(tmp), "w"))  # the muxer follows the suffix
            except OSError as err:  # the folder cannot be made or written: the output's fault, not the input's
                raise VidclsError(f"cannot write video {path}: {err.strerror or err}") from err
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = size[0] + size[0] % 2, size[1] + size[1] % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            if gop is not None:
                stream.codec_context.gop_size = gop
            copying = True
            audio = None
            if audio_from:
                from vidcls.video.container import open_container  # the decoder's side: imports torch

                audio = AudioCopy(stack.enter_context(open_container(audio_from)), container)
            for index, frame in enumerate(frames):
                if audio is not None:
                    copying = True
                    audio.until(index / fps)
                copying = False
                picture = np.ascontiguousarray(pad_to_even(np.asarray(frame)[None])[0])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
            container.mux(stream.encode())
            if audio is not None:
                copying = True
                audio.until(math.inf)
    except (av.error.FFmpegError, ValueError) as err:
        hint = f" (copying the audio of {audio_from}; --no-audio leaves it out)" if audio_from and copying else ""
        raise VidclsError(f"cannot write video {path}: {getattr(err, 'strerror', None) or err}{hint}") from err
    return path


class AudioCopy:
    """The first audio stream of a source, copied packet by packet into an output being written (a
    remux: no decoding or re-encoding, so nothing of the sound changes), interleaved with the video
    by time. Times are shifted by the start of the source's video stream, whose first frame is the
    output's time 0, so picture and sound stay in sync. A source without audio copies nothing."""

    def __init__(self, source: InputContainer, output: OutputContainer) -> None:
        found = next(iter(source.streams.audio), None)
        video = next(iter(source.streams.video), None)
        self.output = output
        self.stream = output.add_stream_from_template(found) if found is not None else None
        self.packets = source.demux(found) if found is not None else iter(())
        start = video.start_time * video.time_base if video is not None and video.start_time else 0
        self.time_base = found.time_base if found is not None else Fraction(1)
        self.shift = round(start / self.time_base)
        self.pending = self._next()

    def _next(self) -> av.Packet | None:
        """The next packet to copy; the demuxer's closing empty packet (no timestamp) is not one."""
        return next((packet for packet in self.packets if packet.dts is not None), None)

    def until(self, seconds: float) -> None:
        """Mux the packets that start before `seconds` (output time)."""
        while self.pending is not None and (_stamp(self.pending) - self.shift) * self.time_base < seconds:
            packet, self.pending = self.pending, self._next()
            packet.dts -= self.shift
            if packet.pts is not None:
                packet.pts -= self.shift
            packet.stream = self.stream
            self.output.mux(packet)


def _stamp(packet: av.Packet) -> int:
    """When a packet starts, in its stream's time base: its pts, else (a format without them) its dts."""
    return packet.pts if packet.pts is not None else packet.dts
