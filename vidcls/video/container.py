"""Open a video file or URL with PyAV and iterate its decoded frames, every failure one line.

The layer under decode.py: containers, the video stream, the frame clock (indices against
timestamps) and display rotation. Every failure of the container, the demuxer or the decoder
becomes a VideoDecodeError with a one-line reason, so one bad file in a batch is reported
instead of crashing the run.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import torch
from av.container import InputContainer
from av.video.stream import VideoStream

from vidcls.errors import VidclsError
from vidcls.video.inputs import is_url
from vidcls.video.probe import refusal, unparsable, video_streams

_DEFAULT_FPS = Fraction(25)  # ffmpeg's own fallback when a stream states no rate at all
# Network inputs are handed to ffmpeg as they are; a stalled server must not hang a run.
NETWORK_TIMEOUT_S = 30  # what a URL may stall for, per read (vidcls serve --allow-urls fetches with the same)
_NETWORK_OPTIONS = {"rw_timeout": str(NETWORK_TIMEOUT_S * 10**6), "timeout": str(NETWORK_TIMEOUT_S * 10**6)}  # µs
# ... nor one that sends a byte every few seconds, or a valid video followed by bytes without end:
# a network input has this long in all (VIDCLS_NETWORK_DEADLINE seconds), opening and reading together
DEADLINE_ENV, DEFAULT_DEADLINE_S, READ_TIMEOUT_S = "VIDCLS_NETWORK_DEADLINE", 300.0, float(NETWORK_TIMEOUT_S)
_deadlines: dict[int, float] = {}  # id(open network container) -> time.monotonic() it must be done by
# Largest frame decoded: 8K UHD. A few hundred bytes of H.264 can announce 8192x8192 frames;
# refusing them up front keeps one hostile file from claiming gigabytes (README, Guarantees).
MAX_FRAME_PIXELS = 7680 * 4320


# Demuxers of self-contained video files: all that `vidcls serve` lets ffmpeg use on an upload. A
# playlist or list format (hls, concat, ...) would have ffmpeg open the paths and URLs written in the file.
SELF_CONTAINED_FORMATS = ("mov", "matroska", "avi", "mpeg", "mpegts", "mpegvideo", "asf", "flv", "ogg", "gif",
                          "yuv4mpegpipe", "mjpeg", "mxf", "h264", "hevc", "m4v", "ivf", "nut", "dv")
_local_options: dict[str, str] = {}  # av.open options for local files (restrict_to_self_contained_files)


def restrict_to_self_contained_files() -> None:
    """From now on, in this process, open local files with the `file` protocol and SELF_CONTAINED_FORMATS'
    demuxers only: for files from strangers (a server's uploads), which must not make ffmpeg open anything else."""
    _local_options.update(protocol_whitelist="file", format_whitelist=",".join(SELF_CONTAINED_FORMATS))


class VideoDecodeError(VidclsError):
    """A video file cannot be read; the message is a one-line reason (the caller adds the path)."""


@dataclass
class DecodeStats:
    """Counters filled in by read_frames/load_clips: decoding stays sparse, and damage is seen.

    corrupt_frames counts frames the decoder flagged as concealed (a damaged middle decodes to
    smeared pictures without any exception); bad_packets counts packets the demuxer or the
    decoder rejected.
    """

    frames_decoded: int = 0
    seeks: int = 0
    corrupt_frames: int = 0
    bad_packets: int = 0

    def warnings(self) -> list[str]:
        """One line per kind of damage seen, for the result of the video ([] when clean)."""
        notes = []
        if self.corrupt_frames:
            notes.append(f"decoder concealed damage in {self.corrupt_frames} frame(s); the result may be off")
        if self.bad_packets:
            notes.append(f"{self.bad_packets} packet(s) could not be decoded and were skipped")
        return notes


@dataclass(frozen=True)
class Clock:
    """Converts between frame indices and stream timestamps (exact rational arithmetic).

    start_pts is the timestamp of frame 0.
    """

    fps: Fraction
    time_base: Fraction
    start_pts: int

    def index(self, pts: int) -> int:
        return round((pts - self.start_pts) * self.time_base * self.fps)

    def pts(self, index: int) -> int:
        """The latest timestamp still rounding to `index`, so a backward seek lands on or before it."""
        return self.start_pts + math.ceil((index + Fraction(1, 2)) / (self.fps * self.time_base)) - 1


# ----------------------------------------------------------------------------- opening files


def _head(source: str | Path) -> bytes:
    """The first bytes of a local file (b"" for a URL): enough to name a cut-off MP4."""
    if is_url(source):
        return b""
    with Path(source).open("rb") as f:
        return f.read(12)


def _open_failure(err: Exception, path: Path) -> str:
    """A one-line reason for av.open() failing on an existing, non-empty file."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, (av.error.InvalidDataError, av.error.EOFError)):
        return unparsable(_head(path))
    if isinstance(err, av.error.FFmpegError):
        return f"cannot open: {err.strerror}"
    return f"cannot read file: {getattr(err, 'strerror', None) or err}"


def _video_stream(container: InputContainer, path: str | Path) -> VideoStream:
    """The first real video stream; cover art (attached pictures), still images and text are refused."""
    reason = refusal(container, lambda: _head(path))
    if reason:
        raise VideoDecodeError(reason)
    return video_streams(container)[0]


_decoder_threads = 0  # 0: ffmpeg's choice (one per core)


def set_decoder_threads(threads: int) -> None:
    """Decoder threads per opened video in this process (0: ffmpeg's choice).

    Worker processes that decode in parallel take 1 each, so that N workers use N cores
    instead of N x cores threads fighting over them.
    """
    global _decoder_threads
    _decoder_threads = threads


def network_deadline_s() -> float:
    """How long one network input may take in all (VIDCLS_NETWORK_DEADLINE, seconds; default 300)."""
    text = os.environ.get(DEADLINE_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_DEADLINE_S
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise VidclsError(f"{DEADLINE_ENV}={text!r} must be a number of seconds above 0")
    return seconds


def _open_url(url: str) -> InputContainer:
    """av.open() a URL under the whole-input deadline: PyAV's open timeout bounds the open (probing
    included), its read timeout each read; decoded_frames checks the deadline between packets."""
    seconds = network_deadline_s()
    try:
        container = av.open(url, metadata_errors="ignore", options=_NETWORK_OPTIONS,
                            timeout=(seconds, min(seconds, READ_TIMEOUT_S)))
    except av.error.ExitError as err:
        raise VideoDecodeError(f"cannot open: no video within {seconds:g} s ({DEADLINE_ENV} sets the limit)") from err
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"cannot open: {getattr(err, 'strerror', None) or err}") from err
    _deadlines[id(container)] = time.monotonic() + seconds
    return container


def _check_deadline(container: InputContainer) -> None:
    deadline = _deadlines.get(id(container))
    if deadline is not None and time.monotonic() > deadline:
        raise VideoDecodeError(f"the network input took longer than {network_deadline_s():g} s in all and was "
                               f"stopped ({DEADLINE_ENV} sets the limit)")


def open_container(path: str | Path) -> InputContainer:
    """av.open() a file or URL (a whole-input deadline for a URL); every failure is one VideoDecodeError.

    Only regular files are opened: a FIFO or a device (/dev/zero) would block or never end."""
    if is_url(path):
        return _open_url(str(path))
    path = Path(path)
    try:
        if not path.exists():
            raise VideoDecodeError("file not found")
        if path.is_dir():
            raise VideoDecodeError("is a directory, not a video file")
        if not path.is_file():
            raise VideoDecodeError("not a regular file (a FIFO, socket or device); save the video to a file")
        if path.stat().st_size == 0:
            raise VideoDecodeError("file is empty (0 bytes)")
        return av.open(str(path), metadata_errors="ignore", options=dict(_local_options))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        if _local_options and isinstance(err, av.error.ArgumentError):  # EINVAL: a format not on the list
            raise VideoDecodeError("not a self-contained video file (playlists and lists are refused)") from err
        raise VideoDecodeError(_open_failure(err, path)) from err


@contextmanager
def open_video(path: str | Path) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open a file or URL and its video stream, turning every PyAV/OS failure inside into VideoDecodeError."""
    container = open_container(path)
    with container, contextlib.ExitStack() as forget:
        forget.callback(_deadlines.pop, id(container), None)
        try:
            stream = _video_stream(container, path)
            if stream.codec_context is None:  # a damaged header can name no codec ffmpeg knows
                raise VideoDecodeError("no decoder for its video stream (damaged header or unknown codec)")
            stream.thread_type = "AUTO"
            if _decoder_threads:
                stream.codec_context.thread_count = _decoder_threads
            yield container, stream
        except VideoDecodeError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise VideoDecodeError(f"decoding failed: {' '.join(reason.split())}") from err


def decoded_frames(container: InputContainer, stream: VideoStream,
            stats: DecodeStats) -> Iterator[av.VideoFrame]:
    """Decode from the current position to the end, skipping corrupt packets like ffmpeg does.

    A demuxer error (cut-off file) ends the stream after draining the frames still buffered.
    """
    packets = container.demux(stream)
    while True:
        _check_deadline(container)
        try:
            packet = next(packets, None)
        except av.error.ExitError as err:  # the read timeout of a network input
            raise VideoDecodeError(f"the network input stopped sending for {READ_TIMEOUT_S:g} s") from err
        except av.error.FFmpegError:
            stats.bad_packets += 1
            packet = None
        try:
            decoded = stream.decode(packet)
        except (av.error.InvalidDataError, av.error.EOFError):
            stats.bad_packets += packet is not None  # the end-of-stream flush may say EOF
            decoded = []
        for frame in decoded:
            stats.frames_decoded += 1
            stats.corrupt_frames += frame.is_corrupt
            yield frame
        if packet is None:
            return


def _rate(stream: VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return _DEFAULT_FPS


def stream_clock(stream: VideoStream, first: av.VideoFrame) -> Clock:
    start = first.pts if first.pts is not None else stream.start_time or 0
    return Clock(fps=_rate(stream), time_base=Fraction(stream.time_base or Fraction(1, 1)), start_pts=start)


# ----------------------------------------------------------------------------- rotation


def rotation_cw(frame: av.VideoFrame, stream: VideoStream) -> int:
    """Clockwise display rotation in {0, 90, 180, 270}.

    The display matrix arrives on every decoded frame (VideoFrame.rotation, counter-clockwise);
    old muxers/PyAV versions expose the legacy clockwise "rotate" stream tag instead.
    """
    ccw = getattr(frame, "rotation", 0) or 0
    legacy = stream.metadata.get("rotate")
    clockwise = -ccw if ccw else float(legacy or 0)
    return round(clockwise / 90) % 4 * 90


def rotate_frames(frames: torch.Tensor, rotation: int) -> torch.Tensor:
    """Turn (..., H, W, C) frames `rotation` degrees clockwise (a multiple of 90)."""
    return torch.rot90(frames, k=(-rotation // 90) % 4, dims=(-3, -2)) if rotation % 360 else frames
