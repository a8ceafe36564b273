"""Which frame indices a clip takes from a video: segment (TSN-style) or dense (stride) sampling.

Pure index arithmetic, no decoding: training draws random clips, testing takes evenly spaced ones.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from vidcls.choices import SAMPLINGS

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
