"""vidcls.video: probing, clip index sampling, sparse frame reading, rotation, bad inputs."""

from __future__ import annotations

import random
import struct
import time
import zlib
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

import vidcls.video.container
import vidcls.video.decode
from vidcls.errors import VidclsError
from vidcls.video.container import DecodeStats, VideoDecodeError, rotate_frames
from vidcls.video.decode import load_clips, probe, read_frames
from vidcls.video.sampling import dense_indices, random_clip_indices, sample_indices, segment_indices

# ----------------------------------------------------------------------------- probe


@pytest.mark.parametrize(("name", "width", "height", "fps", "frames"), [
    ("landscape.mp4", 64, 48, 10, 25),
    ("portrait.mp4", 48, 64, 30, 31),
    ("matroska.mkv", 64, 32, 25, 40),  # no frame count in the container: estimated from duration
])
def test_probe_reports_size_rate_and_exact_frame_count(make_video, name, width, height, fps, frames):
    path = make_video(name, frames, width=width, height=height, fps=fps)
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.rotation) == (width, height, frames, 0)
    assert info.fps == pytest.approx(fps)
    assert info.duration_s == pytest.approx(frames / fps, abs=1.5 / fps)
    assert info.codec == "h264"
    assert info.path == str(path)


# ----------------------------------------------------------------------------- index sampling


def test_segment_indices_take_segment_middles():
    assert segment_indices(100, 4) == [[12, 37, 62, 87]]
    assert segment_indices(8, 8) == [list(range(8))]


@pytest.mark.parametrize("num_frames", [1, 3, 7, 16, 100, 1001])
@pytest.mark.parametrize(("frames", "clips"), [(8, 1), (16, 1), (8, 3), (32, 2)])
def test_segment_indices_are_valid_and_sorted(num_frames, frames, clips):
    out = segment_indices(num_frames, frames, clips)
    assert len(out) == clips and all(len(clip) == frames for clip in out)
    for clip in out:
        assert all(0 <= i < num_frames for i in clip)
        assert clip == sorted(clip)
    if num_frames >= frames * clips:  # clips interleave: no frame taken twice
        flat = [i for clip in out for i in clip]
        assert len(set(flat)) == len(flat)


def test_segment_indices_pad_short_videos_by_repetition():
    assert segment_indices(1, 8) == [[0] * 8]
    short = segment_indices(3, 8)[0]
    assert sorted(set(short)) == [0, 1, 2] and short == sorted(short)


def test_dense_indices_stride_and_centre():
    (clip,) = dense_indices(100, 8, 4)
    assert [b - a for a, b in pairwise(clip)] == [4] * 7
    assert abs((clip[0] + clip[-1]) / 2 - 50) <= 1  # centred in the video


@pytest.mark.parametrize("num_frames", [1, 5, 31, 64, 300])
@pytest.mark.parametrize(("frames", "stride", "clips"), [(8, 8, 1), (16, 4, 3), (32, 2, 10), (8, 1, 2)])
def test_dense_indices_are_valid_and_clips_spread(num_frames, frames, stride, clips):
    out = dense_indices(num_frames, frames, stride, clips)
    assert len(out) == clips and all(len(clip) == frames for clip in out)
    for clip in out:
        assert all(0 <= i < num_frames for i in clip) and clip == sorted(clip)
    starts = [clip[0] for clip in out]
    assert starts == sorted(starts)
    if (frames - 1) * stride + 1 <= num_frames // clips:  # room for disjoint clips
        assert len(set(starts)) == clips


def test_dense_indices_pad_with_last_frame_when_video_is_short():
    assert dense_indices(10, 8, 4) == [[0, 4, 8, 9, 9, 9, 9, 9]]
    assert dense_indices(1, 4, 2, clips=3) == [[0] * 4] * 3


def test_sample_indices_dispatches_and_rejects_unknown():
    assert sample_indices(50, 8, 4, 2, "segment") == segment_indices(50, 8, 2)
    assert sample_indices(50, 8, 4, 2, "dense") == dense_indices(50, 8, 4, 2)
    with pytest.raises(ValueError, match="unknown sampling"):
        sample_indices(50, 8, 4, 1, "uniform")
    with pytest.raises(ValueError):
        segment_indices(0, 8)


@pytest.mark.parametrize("sampling", ["segment", "dense"])
def test_random_clip_indices_are_valid_and_seeded(sampling):
    draws = [random_clip_indices(200, 8, 4, sampling, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(len(d) == 8 and d == sorted(d) and 0 <= d[0] and d[-1] < 200 for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # it does vary
    assert draws[3] == random_clip_indices(200, 8, 4, sampling, torch.Generator().manual_seed(3))
    assert random_clip_indices(1, 8, 4, sampling, torch.Generator()) == [0] * 8


# ----------------------------------------------------------------------------- reading frames


def decode_all(path: Path) -> torch.Tensor:
    """Every frame, decoded sequentially with plain PyAV: the reference for read_frames."""
    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24"))
                            for f in container.decode(container.streams.video[0])])


@pytest.mark.parametrize(("name", "codec", "options"), [
    ("bframes.mp4", "libx264", {"crf": "0", "g": "10", "bf": "3"}),  # decode order != display order
    ("matroska.mkv", "libx264", {"crf": "0", "g": "10"}),  # no keyframe index until the first seek
    ("mpegts.ts", "libx264", {"crf": "0", "g": "10"}),
    ("bframes.avi", "mpeg4", {"qscale": "1", "g": "10", "bf": "2"}),  # first picture at pts 1, not 0
    ("raw.h264", "libx264", {"crf": "0", "g": "10"}),  # no timestamps at all: decoded sequentially
])
def test_read_frames_returns_the_wanted_frames(make_video, name, codec, options):
    path = make_video(name, 120, codec=codec, options=options)
    indices = [97, 3, 3, 55, 119, 0, 56, 97, 20]  # unsorted, repeated, both ends
    stats = DecodeStats()
    frames = read_frames(path, indices, stats)
    assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 32, 48, 3)
    assert torch.equal(frames, decode_all(path)[indices])
    assert stats.frames_decoded < 120 or name == "raw.h264"
    assert probe(path).num_frames == 120


def test_read_frames_content_is_the_index(make_video, frame_index):
    path = make_video("gop10.mp4", 120)
    indices = [97, 3, 3, 55, 119, 0, 56, 97, 20]
    stats = DecodeStats()
    assert [frame_index(f) for f in read_frames(path, indices, stats)] == indices
    assert stats.seeks > 0 and stats.frames_decoded < 60


def test_seeks_landing_past_the_target_are_retried_earlier(make_video, frame_index, monkeypatch):
    """Some demuxers land after the requested time; simulate one by aiming seeks 7 frames late."""
    path = make_video("late.mp4", 120)
    aim = vidcls.video.container.Clock.pts
    monkeypatch.setattr(vidcls.video.container.Clock, "pts", lambda clock, index: aim(clock, index + 7))
    indices = [30, 31, 64, 100, 101, 119]
    stats = DecodeStats()
    assert [frame_index(f) for f in read_frames(path, indices, stats)] == indices
    assert stats.seeks > 4  # each far target needed a second, earlier seek


def test_a_seek_that_lands_early_is_not_repeated(make_video, frame_index, monkeypatch):
    """A policy that misjudges keyframes (MP4 index timestamps are decode times, so with B-frames
    it can think a keyframe lies just before the target) must not seek to the same keyframe forever."""
    path = make_video("gop10.mp4", 120)
    monkeypatch.setattr(vidcls.video.decode._SeekPolicy, "worth_it",
                        lambda policy, current, target: target > current + 1)
    seek = vidcls.video.decode._FramePicker.seek
    seeks = []

    def counted_seek(picker, index):  # a seek loop fails the test instead of hanging it
        seeks.append(index)
        assert len(seeks) <= 100, f"seeking in a loop: {seeks[-5:]}"
        seek(picker, index)

    monkeypatch.setattr(vidcls.video.decode._FramePicker, "seek", counted_seek)
    indices = [6, 18, 30, 42, 54, 66, 78, 90, 119]
    stats = DecodeStats()
    assert [frame_index(f) for f in read_frames(path, indices, stats)] == indices
    assert stats.seeks <= 2 * len(indices)


def test_one_frame_video(make_video, frame_index):
    path = make_video("one.mp4", 1)
    assert probe(path).num_frames == 1
    clips, _ = load_clips(path, frames=8, stride=4, clips=2, sampling="dense")
    assert clips.shape == (2, 8, 32, 48, 3) and {frame_index(f) for f in clips.flatten(0, 1)} == {0}


def test_read_frames_random_index_sets(make_video, frame_index):
    path = make_video("gop10.mp4", 200)
    rng = random.Random(0)
    for _ in range(5):
        indices = [rng.randrange(200) for _ in range(rng.randint(1, 12))]
        assert [frame_index(f) for f in read_frames(path, indices)] == indices


def test_read_frames_past_the_end_gives_last_frame(make_video, frame_index):
    path = make_video("short.mp4", 12)
    assert [frame_index(f) for f in read_frames(path, [5, 11, 12, 400])] == [5, 11, 11, 11]
    with pytest.raises(ValueError):
        read_frames(path, [-1])


def test_load_clips_shape_and_each_frame_decoded_once(make_video, frame_index):
    path = make_video("clips.mp4", 40)
    stats = DecodeStats()
    clips, info = load_clips(path, frames=16, stride=1, clips=3, sampling="dense", stats=stats)
    assert clips.shape == (3, 16, 32, 48, 3) and info.num_frames == 40
    expected = dense_indices(40, 16, 1, 3)
    assert [[frame_index(f) for f in clip] for clip in clips] == expected
    assert stats.frames_decoded <= 40  # overlapping clips share their decoded frames


def test_long_video_decodes_only_what_is_needed(make_video, frame_index):
    """A 10-minute clip (3000 frames at 5 fps): 16 frames must not cost a full decode."""
    num_frames, gop = 3000, 50
    path = make_video("long.mp4", num_frames, width=48, height=16, fps=5,
                      options={"preset": "ultrafast", "crf": "10", "g": str(gop)})
    stats = DecodeStats()
    start = time.perf_counter()
    clips, info = load_clips(path, frames=16, stats=stats)
    sparse_s = time.perf_counter() - start
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded_all = sum(1 for _ in container.decode(stream))
    full_s = time.perf_counter() - start
    print(f"\nlong video ({num_frames} frames): load_clips 16 frames {sparse_s * 1e3:.1f} ms, "
          f"decoded {stats.frames_decoded} frames in {stats.seeks} seeks; "
          f"decoding every frame {full_s * 1e3:.1f} ms")
    assert info.num_frames == decoded_all == num_frames
    assert [frame_index(f) for f in clips[0]] == segment_indices(num_frames, 16)[0]
    assert stats.frames_decoded <= 16 * gop < num_frames / 3


# ----------------------------------------------------------------------------- rotation


def corner_marker(index: int, height: int, width: int) -> np.ndarray:
    """Black frame with a white block in the top-left corner of the coded picture."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:16, :16] = 255
    return frame


@pytest.mark.parametrize(("rotation", "corner"), [(90, "top-right"), (180, "bottom-right"),
                                                  (270, "bottom-left")])
def test_rotation_metadata_is_applied(make_video, rotation, corner):
    path = make_video(f"rot{rotation}.mp4", 5, width=64, height=48, rotation_cw=rotation,
                      frame=corner_marker)
    info = probe(path)
    assert info.rotation == rotation
    display = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == display
    frames = read_frames(path, [0, 4])
    assert frames.shape == (2, display[1], display[0], 3)
    h, w = frames.shape[1:3]
    quadrants = {"top-left": (0, 0), "top-right": (0, w - 1), "bottom-left": (h - 1, 0),
                 "bottom-right": (h - 1, w - 1)}
    for name, (y, x) in quadrants.items():
        assert (frames[:, y, x].float().mean() > 128) == (name == corner), name


def test_legacy_rotate_tag_is_read_when_frames_carry_no_display_matrix():
    """Older FFmpeg builds export the phone "rotate" tag instead; this PyAV cannot write it."""
    legacy = SimpleNamespace(metadata={"rotate": "90"})
    assert vidcls.video.container.rotation_cw(SimpleNamespace(rotation=0), legacy) == 90
    assert vidcls.video.container.rotation_cw(SimpleNamespace(rotation=-90), SimpleNamespace(metadata={})) == 90
    assert vidcls.video.container.rotation_cw(SimpleNamespace(rotation=180), SimpleNamespace(metadata={})) == 180


def test_rotate_frames_turns_clockwise():
    frame = torch.arange(6).reshape(2, 3, 1).expand(2, 3, 3)  # [[0 1 2], [3 4 5]]
    assert rotate_frames(frame, 90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_frames(frame, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert rotate_frames(frame, 270)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_frames(frame, 0) is frame


# ----------------------------------------------------------------------------- variable frame rate


def test_variable_frame_rate(make_video, frame_index):
    rng = random.Random(0)
    pts_ms = [0]
    for _ in range(59):
        pts_ms.append(pts_ms[-1] + rng.choice([20, 40, 100, 250]))
    path = make_video("vfr.mp4", 60, pts_ms=pts_ms)
    info = probe(path)
    assert info.num_frames == 60
    # index i is the frame on screen at i / fps, fps being the average rate
    shown = [max(j for j, t in enumerate(pts_ms) if round(t / 1000 * info.fps) <= i) for i in range(60)]
    indices = [59, 0, 30, 31, 7, 45, 12]
    assert [frame_index(f) for f in read_frames(path, indices)] == [shown[i] for i in indices]
    clips, _ = load_clips(path, frames=8, clips=2)
    got = [frame_index(f) for f in clips[0]]
    assert got == sorted(got) and clips.shape == (2, 8, 32, 48, 3)


# ----------------------------------------------------------------------------- bad inputs


def tiny_png(path: Path) -> Path:
    """A valid 8x6 RGB PNG written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(range(24)) for _ in range(6))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 6, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def jpeg(path: Path) -> Path:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg")
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8))))
        container.mux(stream.encode())
    return path


def truncated(make_video, fraction: float, **options) -> Path:
    path = make_video("whole.mp4", 100, **options)
    cut = path.with_name(f"cut{fraction}.mp4")
    data = path.read_bytes()
    cut.write_bytes(data[:int(len(data) * fraction)])
    return cut


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "empty": (lambda d, mv: _write(d / "empty.mp4", b""), "file is empty (0 bytes)"),
    "random bytes": (lambda d, mv: _write(d / "noise.mp4", random.Random(0).randbytes(4000)),
                     "not a video file or unsupported format"),
    "text as .txt": (lambda d, mv: _write(d / "notes.txt", b"hello\nthis is not a video\n" * 20),
                     "not a video file (looks like text)"),
    "text as .mp4": (lambda d, mv: _write(d / "notes.mp4", b"hello\nthis is not a video\n" * 20),
                     "not a video file or unsupported format"),
    "missing": (lambda d, mv: d / "nope.mp4", "file not found"),
    "directory": (lambda d, mv: d, "is a directory, not a video file"),
    "png": (lambda d, mv: tiny_png(d / "picture.png"), "still image, not a video"),
    "png named .mp4": (lambda d, mv: tiny_png(d / "picture.mp4"), "still image, not a video"),
    "jpeg": (lambda d, mv: jpeg(d / "photo.jpg"), "still image, not a video"),
    "audio only": (lambda d, mv: audio_only(d / "sound.m4a"), "no video stream (audio-only file?)"),
    "mp4 cut before its index": (lambda d, mv: truncated(mv, 0.3), "incomplete MP4"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_one_line_errors(tmp_path, make_video, case):
    make, reason = BAD_INPUTS[case]
    path = make(tmp_path, make_video)
    for call in (lambda: probe(path), lambda: load_clips(path, frames=8),
                 lambda: read_frames(path, [0])):
        with pytest.raises(VideoDecodeError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(reason) and "\n" not in message
        assert isinstance(caught.value, VidclsError) and caught.value.exit_code == 1


def test_mp4_with_index_first_but_data_cut_off(make_video, frame_index):
    """faststart puts the index first: the file opens, the tail is missing."""
    cut = truncated(make_video, 0.6, container_options={"movflags": "faststart"})
    info = probe(cut)
    assert info.num_frames == 100  # what the index promises
    clips, _ = load_clips(cut, frames=8)
    got = [frame_index(f) for f in clips[0]]
    assert got == sorted(got) and 0 < max(got) < 99  # the real tail repeats the last good frame
    assert got[-1] == got[-2]


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.9])
def test_cut_faststart_mp4_returns_frames_or_a_clear_error(make_video, fraction):
    cut = truncated(make_video, fraction, container_options={"movflags": "faststart"})
    try:
        clips, _ = load_clips(cut, frames=8)
    except VideoDecodeError as err:
        assert "\n" not in str(err)
    else:
        assert clips.shape == (1, 8, 32, 48, 3)
