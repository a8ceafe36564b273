"""Decode just the frames a model needs from a video file, with PyAV.

Frame index i means "the frame on screen at time i / fps" (fps = the stream's average rate,
counted from the stream's first timestamp). For constant-frame-rate video that is exactly the
i-th frame; for variable frame rate it is a uniform resampling in time, which is what clip
sampling wants anyway. Decoding seeks to the keyframe before each far-away wanted frame and
stops just past the last one, so a 16-frame clip from a long video costs a few GOPs, not the video.

Every failure of the container, the demuxer or the decoder becomes a VideoDecodeError with a
one-line reason, so one bad file in a batch is reported instead of crashing the run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import torch
from av.container import InputContainer
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from .choices import SAMPLINGS
from .errors import VidclsError


# Demuxers that read a single still picture: "image2" plus the "<codec>_pipe" family
# (png_pipe, jpeg_pipe, webp_pipe, bmp_pipe, ...).
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")
# ffmpeg's "tty" demuxer renders .txt/.nfo/.ans files as ANSI-art video; never what a user means.
_TEXT_FORMATS = ("tty",)
# Without a keyframe index, seek only when the next wanted frame is this many seconds ahead;
# the guess grows when a seek shows keyframes are further apart.
_DEFAULT_SEEK_GAP_S = 2.0
_DEFAULT_FPS = Fraction(25)  # ffmpeg's own fallback when a stream states no rate at all
# Network inputs are handed to ffmpeg as they are; a stalled server must not hang a run.
_NETWORK_OPTIONS = {"rw_timeout": "30000000", "timeout": "30000000"}  # microseconds
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Largest frame decoded: 8K UHD. A few hundred bytes of H.264 can announce 8192x8192 frames;
# refusing them up front keeps one hostile file from claiming gigabytes (README, Guarantees).
MAX_FRAME_PIXELS = 7680 * 4320


class VideoDecodeError(VidclsError):
    """A video file cannot be read; the message is a one-line reason (the caller adds the path)."""


@dataclass(frozen=True)
class VideoInfo:
    """What probe() learns about a video.

    width/height are the display size (after rotation); rotation is the clockwise turn, in
    degrees, applied to decoded frames to show them upright (the "rotate" tag of phone videos);
    num_frames is the container's count when it has one, else round(duration_s * fps).
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    rotation: int
    codec: str


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
class _Clock:
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


# ----------------------------------------------------------------------------- index sampling


def _check_counts(num_frames: int, frames: int, clips: int, stride: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1 or clips < 1 or stride < 1:
        raise ValueError(f"frames, clips and stride must be >= 1, got {frames}, {clips}, {stride}")


def segment_indices(num_frames: int, frames: int, clips: int = 1) -> list[list[int]]:
    """TSN test-time sampling: split the video into `frames` equal segments, take one frame each.

    Clip c takes the point (c + 0.5) / clips of the way through every segment, so one clip is
    the segment middles and several clips interleave evenly. Short videos repeat frames.
    """
    _check_counts(num_frames, frames, clips)
    seg = Fraction(num_frames, frames)
    return [[min(num_frames - 1, math.floor(seg * (k + Fraction(2 * c + 1, 2 * clips))))
             for k in range(frames)] for c in range(clips)]


def dense_indices(num_frames: int, frames: int, stride: int, clips: int = 1) -> list[list[int]]:
    """`frames` frames `stride` apart (8x8, 16x4, 32x2 recipes); clip i centred at (i + 0.5) / clips.

    A clip longer than the video starts at 0 and repeats the last frame.
    """
    _check_counts(num_frames, frames, clips, stride)
    span = (frames - 1) * stride + 1
    latest_start = max(0, num_frames - span)
    out = []
    for c in range(clips):
        centre = Fraction(num_frames * (2 * c + 1), 2 * clips)
        start = min(latest_start, max(0, round(centre - Fraction(span, 2))))
        out.append([min(num_frames - 1, start + k * stride) for k in range(frames)])
    return out


def sample_indices(num_frames: int, frames: int, stride: int, clips: int,
                   sampling: str) -> list[list[int]]:
    """Deterministic test-time clips; `stride` only matters for dense sampling."""
    if sampling == "segment":
        return segment_indices(num_frames, frames, clips)
    if sampling == "dense":
        return dense_indices(num_frames, frames, stride, clips)
    raise ValueError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")


def random_clip_indices(num_frames: int, frames: int, stride: int, sampling: str,
                        generator: torch.Generator) -> list[int]:
    """One training clip: a random frame per segment, or a dense clip at a random start."""
    _check_counts(num_frames, frames, 1, stride)
    if sampling == "segment":
        seg = num_frames / frames
        jitter = torch.rand(frames, generator=generator).tolist()
        return [min(num_frames - 1, math.floor(seg * (k + u))) for k, u in enumerate(jitter)]
    if sampling == "dense":
        latest_start = max(0, num_frames - ((frames - 1) * stride + 1))
        start = int(torch.randint(latest_start + 1, (1,), generator=generator))
        return [min(num_frames - 1, start + k * stride) for k in range(frames)]
    raise ValueError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")


# ----------------------------------------------------------------------------- opening files


def _unparsable(source: str | Path) -> str:
    """Why ffmpeg finds no usable container: name the common cut-off MP4 (it starts with 'ftyp')."""
    if is_url(source):
        return "not a video file or unsupported format"
    with Path(source).open("rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        return "incomplete MP4 (index missing or cut off: truncated download or unfinished recording?)"
    return "not a video file or unsupported format"


def _open_failure(err: Exception, path: Path) -> str:
    """A one-line reason for av.open() failing on an existing, non-empty file."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, (av.error.InvalidDataError, av.error.EOFError)):
        return _unparsable(path)
    if isinstance(err, av.error.FFmpegError):
        return f"cannot open: {err.strerror}"
    return f"cannot read file: {getattr(err, 'strerror', None) or err}"


def _video_stream(container: InputContainer, path: str | Path) -> VideoStream:
    """The first real video stream; cover art (attached pictures), still images and text are refused."""
    fmt = container.format.name
    if fmt in _TEXT_FORMATS:
        raise VideoDecodeError("not a video file (looks like text)")
    if fmt in _STILL_IMAGE_FORMATS or fmt.endswith("_pipe"):
        raise VideoDecodeError("still image, not a video")
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if container.streams.audio:
        raise VideoDecodeError("no video stream (audio-only file?)")
    raise VideoDecodeError(_unparsable(path))  # subtitles, data, or a header cut short


def is_url(source: str | Path) -> bool:
    """http(s)://, rtsp://, ... : opened by ffmpeg itself, never turned into a Path."""
    return isinstance(source, str) and bool(_URL.match(source))


_decoder_threads = 0  # 0: ffmpeg's choice (one per core)


def set_decoder_threads(threads: int) -> None:
    """Decoder threads per opened video in this process (0: ffmpeg's choice).

    Worker processes that decode in parallel take 1 each, so that N workers use N cores
    instead of N x cores threads fighting over them.
    """
    global _decoder_threads
    _decoder_threads = threads


def _open_container(path: str | Path) -> InputContainer:
    if is_url(path):
        try:
            return av.open(str(path), metadata_errors="ignore", options=_NETWORK_OPTIONS)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise VideoDecodeError(f"cannot open: {getattr(err, 'strerror', None) or err}") from err
    path = Path(path)
    try:
        if not path.exists():
            raise VideoDecodeError("file not found")
        if path.is_dir():
            raise VideoDecodeError("is a directory, not a video file")
        if path.stat().st_size == 0:
            raise VideoDecodeError("file is empty (0 bytes)")
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(_open_failure(err, path)) from err


@contextmanager
def _open_video(path: str | Path) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open a file or URL and its video stream, turning every PyAV/OS failure inside into VideoDecodeError."""
    container = _open_container(path)
    with container:
        try:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            if _decoder_threads:
                stream.codec_context.thread_count = _decoder_threads
            yield container, stream
        except VideoDecodeError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise VideoDecodeError(f"decoding failed: {' '.join(reason.split())}") from err


def _frames(container: InputContainer, stream: VideoStream,
            stats: DecodeStats) -> Iterator[av.VideoFrame]:
    """Decode from the current position to the end, skipping corrupt packets like ffmpeg does.

    A demuxer error (cut-off file) ends the stream after draining the frames still buffered.
    """
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
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


def _clock(stream: VideoStream, first: av.VideoFrame) -> _Clock:
    start = first.pts if first.pts is not None else stream.start_time or 0
    return _Clock(fps=_rate(stream), time_base=Fraction(stream.time_base or Fraction(1, 1)), start_pts=start)


# ----------------------------------------------------------------------------- rotation


def _rotation_cw(frame: av.VideoFrame, stream: VideoStream) -> int:
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


# ----------------------------------------------------------------------------- probing


def _count_packets(path: str | Path) -> int:
    """Frame count of a stream whose container states neither count nor duration (raw streams)."""
    with _open_video(path) as (container, stream):
        return sum(1 for packet in container.demux(stream) if packet.size)


def _header_info(path: str | Path, container: InputContainer, stream: VideoStream, clock: _Clock,
                 first: _Converter) -> VideoInfo:
    """What the header and the first frame (its converter: size, rotation) tell; num_frames is
    0 when the container states neither a frame count nor a duration (see _counted)."""
    rotation = first.rotation
    if stream.duration:
        duration = float(stream.duration * clock.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    return VideoInfo(path=str(path), width=width, height=height, fps=float(clock.fps),
                     num_frames=stream.frames or round(duration * clock.fps), duration_s=duration,
                     rotation=rotation, codec=stream.codec_context.name)


def _counted(info: VideoInfo) -> VideoInfo:
    """`info` with the frame count filled in by counting packets when the header had none (raw streams)."""
    if info.num_frames:
        return info
    num_frames = _count_packets(info.path)
    return dataclasses.replace(info, num_frames=max(1, num_frames), duration_s=num_frames / info.fps)


def probe(path: str | Path) -> VideoInfo:
    """Read the header and decode the first frame (proves the file decodes, gives the rotation)."""
    with _open_video(path) as (container, stream):
        first = next(_frames(container, stream, DecodeStats()), None)
        if first is None:
            raise VideoDecodeError("no frames could be decoded (truncated or corrupt?)")
        _check_size(first)
        info = _header_info(path, container, stream, _clock(stream, first), _Converter(first, stream, None))
    return _counted(info)


# ----------------------------------------------------------------------------- reading frames


@dataclass
class _SeekPolicy:
    """Decides whether seeking beats decoding forward to the next wanted frame.

    With a complete keyframe index (MP4/MOV) the answer is exact: seek when the keyframe
    before the target lies past the current position. Otherwise seek when the target is more
    than `gap` frames ahead, widening `gap` whenever a seek lands further back than that.
    """

    clock: _Clock
    stream: VideoStream
    gap: int

    def worth_it(self, current: int, target: int) -> bool:
        if target <= current + 1:
            return False
        keyframe = self._keyframe_before(target)
        if keyframe is not None:
            return keyframe > current + 1
        return target - current > self.gap

    def landed(self, target: int, first_index: int) -> None:
        self.gap = max(self.gap, target - first_index)

    def _keyframe_before(self, target: int) -> int | None:
        entries = self.stream.index_entries
        if not 0 < self.stream.frames <= len(entries):
            return None
        i = entries.search_timestamp(self.clock.pts(target), backward=True)
        return self.clock.index(entries[i].timestamp) if i >= 0 else None


def _check_size(frame: av.VideoFrame) -> None:
    if frame.width * frame.height > MAX_FRAME_PIXELS:
        raise VideoDecodeError(f"frame size {frame.width}x{frame.height} is above the limit of "
                               f"{MAX_FRAME_PIXELS / 1e6:.1f} megapixels (8K UHD)")


FrameFn = Callable[[torch.Tensor], torch.Tensor]


class _Converter:
    """Turns each picked frame into an upright RGB tensor, then `frame_fn` of it, as it is picked.

    Converting at once (not after the last wanted frame) means decoded pictures are never
    held: memory follows what frame_fn keeps, such as frames already at the model's input
    size, not the video's resolution. One shared reformatter (to_ndarray would build a
    scaler, and its thread pool, per frame); frames that change size mid-stream are scaled
    to the first one's. The last two conversions are remembered because a frame is often
    wanted at several indices (it stays on screen).
    """

    def __init__(self, first: av.VideoFrame, stream: VideoStream, frame_fn: FrameFn | None) -> None:
        self.width, self.height = first.width, first.height
        self.rotation = _rotation_cw(first, stream)
        self.scaler = VideoReformatter()
        self.frame_fn = frame_fn
        self.recent: deque[tuple[av.VideoFrame, torch.Tensor]] = deque(maxlen=2)

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        for seen, tensor in self.recent:
            if seen is frame:
                return tensor
        rgb = self.scaler.reformat(frame, self.width, self.height, format="rgb24").to_ndarray()
        tensor = rotate_frames(torch.from_numpy(rgb), self.rotation)
        if self.frame_fn is not None:
            tensor = self.frame_fn(tensor)
        self.recent.append((frame, tensor))
        return tensor


def _rows(picked: dict[int, torch.Tensor], indices: Sequence[int]) -> torch.Tensor:
    """(len(indices), ...) from the picked tensors, repeats copied (no torch.stack: its thread
    pool stalls on busy machines)."""
    sample = picked[indices[0]]
    out = torch.empty((len(indices), *sample.shape), dtype=sample.dtype)
    for row, index in enumerate(indices):
        out[row] = picked[index]
    return out


class _FramePicker:
    """Maps wanted indices (sorted, unique) to the frame on screen at each index's time.

    Decodes forward, seeking ahead when worth it, and stops one frame past the last wanted
    index (with variable frame rate several frames can round to one index; the latest wins).
    A seek that lands past its target (B-frame reordering, VFR) is retried from further back.
    Indices past the real end get the last decodable frame; after a seek into a cut-off tail,
    decoding restarts from the beginning, without seeking, to find that frame.
    """

    def __init__(self, container: InputContainer, stream: VideoStream, stats: DecodeStats,
                 frame_fn: FrameFn | None = None) -> None:
        self.container, self.stream, self.stats = container, stream, stats
        self.frames = _frames(container, stream, stats)
        first = next(self.frames, None)
        if first is None:
            raise VideoDecodeError("no frames could be decoded (truncated or corrupt?)")
        _check_size(first)
        self.convert = _Converter(first, stream, frame_fn)
        self.frames = itertools.chain([first], self.frames)
        # Frame 0 is the first frame decoded, not stream.start_time: AVI with B-frames and some
        # edit lists put the first picture a tick after the stream's nominal start.
        self.clock = _clock(stream, first)
        self.policy = _SeekPolicy(self.clock, stream,
                                  gap=max(1, round(_DEFAULT_SEEK_GAP_S * self.clock.fps)))
        self.last: av.VideoFrame | None = None  # the most recent frame, None right after a seek
        self.last_index = -1
        self.seek_target: int | None = None  # set by a seek until its first frame arrives
        self.can_seek = first.pts is not None  # without timestamps a seek loses track of the position

    def seek(self, index: int) -> None:
        """Seek to the keyframe before `index`.

        A failed seek may leave the demuxer anywhere (ffmpeg's generic seek reads ahead), so it
        is an error rather than a silent fallback.
        """
        try:
            self.container.seek(self.clock.pts(index), backward=True, any_frame=False,
                                stream=self.stream)
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"seeking failed ({err.strerror}); the file may be damaged") from err
        self.stats.seeks += 1
        self.frames = _frames(self.container, self.stream, self.stats)
        self.last, self.last_index, self.seek_target = None, -1, index

    def pick(self, wanted: list[int]) -> dict[int, torch.Tensor]:
        """{index: converted frame} for every index in `wanted` (sorted, unique)."""
        pending = deque(wanted)
        picked: dict[int, torch.Tensor] = {}
        backoff = 0
        no_seek_until = -1  # after an overshoot, decode forward until this index is served
        while pending:
            target = pending[0]
            if (self.can_seek and self.seek_target is None and target > no_seek_until
                    and self.policy.worth_it(self.last_index, target)):
                self.seek(target)
            frame = next(self.frames, None)
            if frame is None:
                if self.last is None and self.can_seek:  # sought into a cut-off tail
                    self.can_seek = False  # find the real last frame, decoding from frame 0
                    self.seek(0)
                    self.seek_target = None
                    continue
                if self.last is None:
                    raise VideoDecodeError("no frames could be decoded (truncated or corrupt?)")
                last = self.convert(self.last)
                picked.update((i, last) for i in pending)
                return picked
            index = self.last_index + 1 if frame.pts is None else self.clock.index(frame.pts)
            if self.seek_target is not None:
                self.policy.landed(self.seek_target, index)
                overshot = index > target and self.seek_target > 0
                self.seek_target = None
                # Seeking again for this target would land on the same keyframe: decode forward.
                no_seek_until = target
                if not overshot:
                    backoff = 0
                else:
                    backoff = max(2 * backoff, 1)
                    self.seek(max(0, target - backoff * self.policy.gap))
                    continue
            while pending and pending[0] < index:  # `last` was on screen until this frame
                # with no last frame (just sought, or at the start) the wanted index precedes this one
                picked[pending.popleft()] = self.convert(frame if self.last is None else self.last)
            self.last, self.last_index = frame, index
        return picked


def read_frames(path: str | Path, indices: Sequence[int], stats: DecodeStats | None = None,
                frame_fn: FrameFn | None = None) -> torch.Tensor:
    """Frames at `indices` (any order, repeats allowed) as uint8 (len(indices), H, W, 3) RGB, upright.

    Each distinct frame is decoded once; indices past the end of a shorter-than-announced
    video get its last frame. With frame_fn, each frame is replaced by frame_fn(frame) as soon
    as it is decoded (resize to the model's size there, so memory follows the model's input).
    """
    if not indices:
        raise ValueError("no frame indices given")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    with _open_video(path) as (container, stream):
        picked = _FramePicker(container, stream, stats or DecodeStats(), frame_fn).pick(sorted(set(indices)))
    return _rows(picked, indices)


def load_clips(path: str | Path, frames: int, stride: int = 1, clips: int = 1, sampling: str = "segment",
               stats: DecodeStats | None = None, frame_fn: FrameFn | None = None) -> tuple[torch.Tensor, VideoInfo]:
    """Test-time clips of a video: uint8 (clips, frames, H, W, 3) (or frame_fn's shape) and its VideoInfo.

    Frames shared between overlapping clips are decoded once.
    """
    info = probe(path)
    clip_indices = sample_indices(info.num_frames, frames, stride, clips, sampling)
    flat = read_frames(path, [i for clip in clip_indices for i in clip], stats, frame_fn)
    return flat.reshape(clips, frames, *flat.shape[1:]), info


# ----------------------------------------------------------------------------- one pass over a long video


class FrameReader:
    """One open video read front to back once: its VideoInfo, then frames at increasing indices.

    For work over a whole long video (a timeline of windows): the caller asks for its
    indices in chunks, each chunk above the previous one, and gets each chunk's frames as
    soon as they are decoded, so it can drop them before asking for the next; each frame is
    decoded at most once and the file is opened once (raw streams whose header states
    neither a frame count nor a duration are counted first, which reads the file once more).
    Made by open_frames().
    """

    def __init__(self, path: str | Path, container: InputContainer, stream: VideoStream, stats: DecodeStats,
                 frame_fn: FrameFn | None) -> None:
        self._picker = _FramePicker(container, stream, stats, frame_fn)
        self.info = _counted(_header_info(path, container, stream, self._picker.clock, self._picker.convert))
        self._after = -1  # every index asked for so far is <= this

    def pick(self, indices: Sequence[int]) -> dict[int, torch.Tensor]:
        """{index: converted frame} for `indices` (sorted, unique, all above the previous chunk's)."""
        if not indices:
            return {}
        if indices[0] <= self._after or any(a >= b for a, b in itertools.pairwise(indices)):
            raise ValueError(f"indices must be sorted, unique and above {self._after}")
        self._after = indices[-1]
        return self._picker.pick(list(indices))

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, converted frame) for every frame from the start, in decoding order (instead of pick)."""
        picker = self._picker
        last = -1
        for frame in picker.frames:
            last = last + 1 if frame.pts is None else picker.clock.index(frame.pts)
            yield last, picker.convert(frame)


@contextmanager
def open_frames(path: str | Path, stats: DecodeStats | None = None,
                frame_fn: FrameFn | None = None) -> Iterator[FrameReader]:
    """Open `path` once for a FrameReader; frame_fn converts each frame as read_frames' does."""
    with _open_video(path) as (container, stream):
        yield FrameReader(path, container, stream, stats or DecodeStats(), frame_fn)
