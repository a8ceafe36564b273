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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import torch
from av.container import InputContainer
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from vidcls.video.container import (
    MAX_FRAME_PIXELS,
    Clock,
    DecodeStats,
    VideoDecodeError,
    decoded_frames,
    open_video,
    rotate_frames,
    rotation_cw,
    stream_clock,
)
from vidcls.video.sampling import sample_indices

# Without a keyframe index, seek only when the next wanted frame is this many seconds ahead;
# the guess grows when a seek shows keyframes are further apart.
_DEFAULT_SEEK_GAP_S = 2.0


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


# ----------------------------------------------------------------------------- probing


def count_packets(path: str | Path) -> int:
    """How many frames the stream really holds: its packets, demuxed without decoding. For a stream
    whose container states neither count nor duration (raw streams), and for work whose cost follows
    the video's length (a timeline), where a header's claim (a duration of 10^15 ms in a 16 KB file)
    must not decide how much is planned."""
    with open_video(path) as (container, stream):
        return sum(1 for packet in container.demux(stream) if packet.size)


def _header_info(path: str | Path, container: InputContainer, stream: VideoStream, clock: Clock,
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
    num_frames = count_packets(info.path)
    return dataclasses.replace(info, num_frames=max(1, num_frames), duration_s=num_frames / info.fps)


def probe(path: str | Path) -> VideoInfo:
    """Read the header and decode the first frame (proves the file decodes, gives the rotation)."""
    with open_video(path) as (container, stream):
        first = next(decoded_frames(container, stream, DecodeStats()), None)
        if first is None:
            raise VideoDecodeError("no frames could be decoded (truncated or corrupt?)")
        _check_size(first)
        info = _header_info(path, container, stream, stream_clock(stream, first), _Converter(first, stream, None))
    return _counted(info)


# ----------------------------------------------------------------------------- reading frames


@dataclass
class _SeekPolicy:
    """Decides whether seeking beats decoding forward to the next wanted frame.

    With a complete keyframe index (MP4/MOV) the answer is exact: seek when the keyframe
    before the target lies past the current position. Otherwise seek when the target is more
    than `gap` frames ahead, widening `gap` whenever a seek lands further back than that.
    """

    clock: Clock
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
        self.rotation = rotation_cw(first, stream)
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
        self.frames = decoded_frames(container, stream, stats)
        first = next(self.frames, None)
        if first is None:
            raise VideoDecodeError("no frames could be decoded (truncated or corrupt?)")
        _check_size(first)
        self.convert = _Converter(first, stream, frame_fn)
        self.frames = itertools.chain([first], self.frames)
        # Frame 0 is the first frame decoded, not stream.start_time: AVI with B-frames and some
        # edit lists put the first picture a tick after the stream's nominal start.
        self.clock = stream_clock(stream, first)
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
        self.frames = decoded_frames(self.container, self.stream, self.stats)
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
    with open_video(path) as (container, stream):
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
    with open_video(path) as (container, stream):
        yield FrameReader(path, container, stream, stats or DecodeStats(), frame_fn)
