"""What ffmpeg makes of an input's first bytes: the refusals every opened video shares, and the
verdict on the head of stdin before the rest of it is copied.

A video on stdin must be copied to a file first (decoding seeks, a pipe cannot), and copying 8 GiB
of random bytes, text or a tarball only to have the decoder refuse it costs that much disk and
time. ffmpeg's own probing judges the head instead, not a table of magic numbers written here:
ffmpeg knows far more formats (and their low-scoring, hard-to-identify variants such as raw H.264
or MPEG-TS) than any such table. ffmpeg picks a demuxer from at most its first 1 MiB
(PROBE_BUF_MAX), so a head larger than that gives the same verdict on the format as the whole file
would. A demuxer that refuses the data later counts only when it needed no byte past the head: one
that ran out (an MP4 whose index is at the end, a pipe cannot skip to it) is no verdict, and the
input is copied and decoded as any other.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import av.error
from av.container import InputContainer
from av.video.stream import VideoStream

# Demuxers that read a single still picture: "image2" plus the "<codec>_pipe" family
# (png_pipe, jpeg_pipe, webp_pipe, bmp_pipe, ...).
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")
# ffmpeg's "tty" demuxer renders .txt/.nfo/.ans files as ANSI-art video; never what a user means.
_TEXT_FORMATS = ("tty",)
NOT_A_VIDEO = "not a video file or unsupported format"
# How much of stdin is judged before any of it is copied: more than ffmpeg's format probe reads (1 MiB).
HEAD_BYTES = 2 << 20
# A list format (concat, ...) opens the files it names, here relative to the current folder: the head
# may open no protocol at all (such a list is then no verdict, and the decoder opens the copy as any file).
_OPEN_NOTHING_ELSE = {"protocol_whitelist": "none"}


def unparsable(head: bytes) -> str:
    """Why ffmpeg finds no usable container in an input starting with `head`: name the common
    cut-off MP4 (it starts with 'ftyp')."""
    if head[4:8] == b"ftyp":
        return "incomplete MP4 (index missing or cut off: truncated download or unfinished recording?)"
    return NOT_A_VIDEO


def _format_refusal(name: str) -> str | None:
    """Why a demuxer is refused by its name alone (text, a still picture), or None."""
    if name in _TEXT_FORMATS:
        return "not a video file (looks like text)"
    if name in _STILL_IMAGE_FORMATS or name.endswith("_pipe"):
        return "still image, not a video"
    return None


def video_streams(container: InputContainer) -> list[VideoStream]:
    """The real video streams of an opened input: cover art (an attached picture) is not one."""
    return [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]


def refusal(container: InputContainer, head: Callable[[], bytes]) -> str | None:
    """Why the decoder refuses an opened input before reading a frame (text, a still image, no video
    stream), or None. `head` reads the input's first bytes, only to name a cut-off MP4."""
    reason = _format_refusal(container.format.name)
    if reason or video_streams(container):
        return reason
    if container.streams.audio:
        return "no video stream (audio-only file?)"
    return unparsable(head())  # subtitles, data, or a header cut short


class _Head:
    """The first bytes of a stream as a file ffmpeg reads like a pipe; `exhausted` records that ffmpeg
    read all of it, and may have wanted more. No seek: given one over a head of unknown size, ffmpeg's
    MP4 demuxer gives up on an index at the end without reading to the head's end, a verdict the whole
    file would not get. Reads past the end get end-of-file, not an exception: PyAV prints those it drops."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position, self.exhausted = data, 0, False

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.position:] if size < 0 else self.data[self.position:self.position + size]
        self.position += len(chunk)
        self.exhausted = self.position >= len(self.data)
        return chunk


def refusal_of_head(head: bytes) -> str | None:
    """Why ffmpeg refuses any input that starts with `head` (at least HEAD_BYTES of it), or None when
    it may be a video or only the rest could tell.

    Only what the head alone decides is a verdict: no demuxer takes the data, or the one taken is
    refused by its name (text, a still picture). An input that opens without a video stream is not:
    ffmpeg finds streams in a file that a pipe does not show it (it reads the end of an MPEG-PS file
    to time it, and so meets the video of one whose first seconds are audio alone)."""
    reader = _Head(head)
    try:
        with av.open(reader, metadata_errors="ignore", options=dict(_OPEN_NOTHING_ELSE)) as container:
            return _format_refusal(container.format.name)  # chosen within the head, whatever the rest holds
    except av.error.InvalidDataError:
        return None if reader.exhausted else unparsable(head)
    except (av.error.FFmpegError, OSError, ValueError):
        return None  # not a verdict on the data: the decoder opens the copy and says what it finds
