"""What ffmpeg makes of an opened input: the refusals every video shares (text, a still picture,
no video stream, a cut-off MP4), in one place for every way an input is opened.
"""

from __future__ import annotations

from collections.abc import Callable

import av
from av.container import InputContainer
from av.video.stream import VideoStream

# Demuxers that read a single still picture: "image2" plus the "<codec>_pipe" family
# (png_pipe, jpeg_pipe, webp_pipe, bmp_pipe, ...).
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")
# ffmpeg's "tty" demuxer renders .txt/.nfo/.ans files as ANSI-art video; never what a user means.
_TEXT_FORMATS = ("tty",)
NOT_A_VIDEO = "not a video file or unsupported format"


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
