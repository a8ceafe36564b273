"""Tiny videos whose headers lie about their length (issue 26, item 8): small PyAV-made clips with a
few bytes patched, or remuxed with forged timestamps. Each decodes to a handful of frames; each
header promises a video of days to millions of years. Importable by any test (FORGERS by name).

- mkv-duration: the Segment's Duration says 10^15 ms
- mkv-timestamp: the last frame's timestamp is 10^12 ms
- mp4-slow-rate: one frame every 100000 s (a frame rate of 1/100000)
- mp4-stts-count: the stts box says 2^31-1 samples
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip

FRAMES = 12


def _clip(path: Path, suffix: str) -> Path:
    """A small honest clip (12 frames, 64x48, H.264, every frame a keyframe: no reordering, so any
    timestamps in increasing order are valid) in the container `suffix` names."""
    source = path.with_name(path.stem + "-source.mp4")
    write_video(source, render_clip(random_spec(random.Random(0), "left", frames=FRAMES, height=48, width=64)), gop=1)
    if suffix == ".mp4":
        return source
    return _remux(source, path.with_name(path.stem + "-source" + suffix), lambda i, pts: pts)


def _remux(source: Path, target: Path, new_pts: Callable[[int, int], int], time_base: Fraction | None = None) -> Path:
    """Copy `source`'s video packets into `target`, packet i stamped new_pts(i, pts) (dts too)."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        if time_base is not None:
            copy.time_base = time_base
        for i, packet in enumerate(p for p in inp.demux(stream) if p.size):
            pts = packet.pts if time_base is None else i
            packet.pts = packet.dts = new_pts(i, pts)
            if time_base is not None:
                packet.time_base = time_base
            packet.stream = copy
            out.mux(packet)
    return target


def _patch(data: bytes, marker: bytes, value: bytes, skip: int = 0) -> bytes:
    """`data` with the bytes after `marker` (+ skip) replaced by `value`; the marker must be there once."""
    assert data.count(marker) == 1, f"{marker!r} found {data.count(marker)} times"
    at = data.index(marker) + len(marker) + skip
    return data[:at] + value + data[at + len(value):]


def mkv_duration(path: Path) -> Path:
    """Matroska whose Segment Info Duration (ID 0x4489, a float in TimestampScale units: ms) is 1e15."""
    data = _clip(path, ".mkv").read_bytes()
    size = data[data.index(b"\x44\x89") + 2] & 0x0F  # the element's size: 4 or 8 bytes of float
    value = struct.pack(">d", 1e15) if size == 8 else struct.pack(">f", 1e15)
    path.write_bytes(_patch(data, b"\x44\x89" + bytes([0x80 | size]), value))
    return path


def mkv_timestamp(path: Path) -> Path:
    """Matroska whose last frame is stamped 10^12 ms (its own cluster's timestamp)."""
    source = _clip(path, ".mp4")
    return _remux(source, path, lambda i, pts: 10**12 if i == FRAMES - 1 else i * 40, Fraction(1, 1000))


def mp4_slow_rate(path: Path) -> Path:
    """MP4 with one frame every 100000 s: its frame rate is 1/100000."""
    source = _clip(path, ".mp4")
    return _remux(source, path, lambda i, pts: i * 100000, Fraction(1, 1))


def mp4_stts_count(path: Path) -> Path:
    """MP4 whose stts box (sample durations) counts 2^31-1 samples in its one entry."""
    data = _clip(path, ".mp4").read_bytes()
    # stts: version/flags (4), entry_count (4), then entries of (sample_count, sample_delta)
    path.write_bytes(_patch(data, b"stts", struct.pack(">I", 2**31 - 1), skip=8))
    return path


FORGERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "mkv-duration": (".mkv", mkv_duration),
    "mkv-timestamp": (".mkv", mkv_timestamp),
    "mp4-slow-rate": (".mp4", mp4_slow_rate),
    "mp4-stts-count": (".mp4", mp4_stts_count),
}


def forge_all(folder: Path) -> dict[str, Path]:
    """Every forged file in `folder`, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: forge(folder / f"{name}{suffix}") for name, (suffix, forge) in FORGERS.items()}
