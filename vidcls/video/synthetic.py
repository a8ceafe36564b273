"""Synthetic clips of one shape moving left, right, up or down.

They are the sample input of `vidcls sample-clip`, the training data of the shipped
motion-direction demo model, and test videos. Appearance (shape, size, colours, noise,
static distractors) is random so a model has to look at the motion, not at the pixels.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidcls.choices import DIRECTIONS
from vidcls.video.encode import write_video

if TYPE_CHECKING:  # rendered with numpy: `vidcls sample-clip` never imports torch
    import torch

SHAPES = ("square", "circle", "triangle", "cross", "diamond")

RGB = tuple[int, int, int]
# (row, column) step of each direction; rows grow downwards as in images.
_STEP = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


@dataclass(frozen=True)
class Distractor:
    """A static shape drawn under the moving one."""

    shape: str
    color: RGB
    size: tuple[float, float]  # (height, width) in pixels
    center: tuple[float, float]  # (row, column) in pixels


@dataclass
class ShapeClipSpec:
    """Everything render_clip needs; all lengths in pixels.

    `start` is the shape's centre (row, column) in frame 0; it moves `speed` pixels per
    frame in `direction`. `noise` is the std of per-pixel Gaussian noise in uint8 units,
    drawn from `noise_seed` so a spec always renders the same clip.
    """

    direction: str
    frames: int = 8
    height: int = 64
    width: int = 64
    shape: str = "square"
    color: RGB = (255, 255, 255)
    background: RGB = (0, 0, 0)
    noise: float = 0.0
    speed: float = 2.0
    size: tuple[float, float] = (16.0, 16.0)
    start: tuple[float, float] = (32.0, 32.0)
    distractors: tuple[Distractor, ...] = field(default=())
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        for shape in (self.shape, *(d.shape for d in self.distractors)):
            if shape not in SHAPES:
                raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if self.frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError("frames, height and width must be >= 1")


# ----------------------------------------------------------------------------- random specs


def _as_random(rng: random.Random | torch.Generator) -> random.Random:
    """One code path for both kinds of seed source (a torch.Generator seeds a random.Random; one can
    only exist once torch is imported)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(rng, torch.Generator):
        return random.Random(int(torch.randint(0, 2**62, (1,), generator=rng)))
    return rng


def _contrasting(r: random.Random, background: RGB) -> RGB:
    """A random colour at least 64 levels away from `background` in every channel."""
    red, green, blue = ((c + r.randint(64, 192)) % 256 for c in background)
    return red, green, blue


def _start(r: random.Random, direction: str, height: int, width: int,
           size: tuple[float, float], travel: float) -> tuple[float, float]:
    """A start centre keeping the whole shape inside the frame for the whole path."""
    dy, dx = _STEP[direction]
    half_h, half_w = size[0] / 2, size[1] / 2

    def axis(length: int, half: float, step: int) -> float:
        low, high = half, length - half  # centre range with the shape fully inside
        if step > 0:
            high -= travel
        elif step < 0:
            low += travel
        return r.uniform(low, high) if high > low else (low + high) / 2

    return axis(height, half_h, dy), axis(width, half_w, dx)


def random_spec(rng: random.Random | torch.Generator, direction: str | None = None,
                **overrides: object) -> ShapeClipSpec:
    """A varied spec: frame 32..128 px a side (non-square too), shape, size, colours, speed, noise.

    Any ShapeClipSpec field can be fixed through `overrides`; the values drawn after it
    (speed, start position) respect it, so the shape stays inside the frame.
    """
    r = _as_random(rng)
    fixed = dict(overrides)

    def pick(name: str, draw: Callable[[], Any]) -> Any:
        return fixed[name] if name in fixed else draw()

    direction = direction or pick("direction", lambda: r.choice(DIRECTIONS))
    frames = pick("frames", lambda: 8)
    height = pick("height", lambda: r.randint(32, 128))
    width = pick("width", lambda: r.randint(32, 128))
    short = min(height, width)
    size = pick("size", lambda: (r.uniform(0.15, 0.35) * short, r.uniform(0.15, 0.35) * short))
    along = height if direction in ("up", "down") else width
    room = max(0.0, along - (size[0] if direction in ("up", "down") else size[1]))
    # cover 30-80% of the free room over the clip: clear motion, shape never leaves the frame
    speed = pick("speed", lambda: r.uniform(0.3, 0.8) * room / max(1, frames - 1))
    background = pick("background", lambda: tuple(r.randint(0, 255) for _ in range(3)))
    values = dict(
        direction=direction, frames=frames, height=height, width=width, size=size, speed=speed,
        background=background,
        shape=pick("shape", lambda: r.choice(SHAPES)),
        color=pick("color", lambda: _contrasting(r, background)),
        noise=pick("noise", lambda: r.choice((0.0, r.uniform(0, 25)))),
        start=pick("start", lambda: _start(r, direction, height, width, size, speed * (frames - 1))),
        distractors=pick("distractors", lambda: tuple(
            Distractor(shape=r.choice(SHAPES), color=_contrasting(r, background),
                       size=(r.uniform(0.1, 0.2) * short, r.uniform(0.1, 0.2) * short),
                       center=(r.uniform(0, height), r.uniform(0, width)))
            for _ in range(r.randint(0, 2)))),
        noise_seed=pick("noise_seed", lambda: r.randrange(2**31)),
    )
    return ShapeClipSpec(**{**fixed, **values})


# ----------------------------------------------------------------------------- rendering


def shape_mask(shape: str, dy: Any, dx: Any, half_h: float, half_w: float) -> Any:
    """Which pixels, at offsets (dy, dx) from the shape's centre, the shape covers (numpy arrays or
    torch tensors alike)."""
    u, v = dy / half_h, dx / half_w  # the shape's box maps to [-1, 1] x [-1, 1]
    inside = (abs(u) <= 1) & (abs(v) <= 1)
    if shape == "square":
        return inside
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "diamond":
        return abs(u) + abs(v) <= 1
    if shape == "triangle":  # apex up, base at the bottom of the box
        return inside & (abs(v) <= (u + 1) / 2)
    if shape == "cross":
        return inside & ((abs(u) <= 1 / 3) | (abs(v) <= 1 / 3))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def _paint(canvas: np.ndarray, mask: np.ndarray, color: RGB) -> np.ndarray:
    return np.where(mask[..., None], np.array(color, dtype=np.uint8), canvas)


def render_frames(spec: ShapeClipSpec) -> np.ndarray:
    """uint8 (T, H, W, 3) numpy frames: background, static distractors, the moving shape, then noise
    (Gaussian, from numpy's generator seeded with the spec's noise_seed)."""
    rows = np.arange(spec.height, dtype=np.float32)[:, None]
    cols = np.arange(spec.width, dtype=np.float32)[None, :]
    still = np.broadcast_to(np.array(spec.background, dtype=np.uint8), (spec.height, spec.width, 3))
    for d in spec.distractors:
        mask = shape_mask(d.shape, rows - np.float32(d.center[0]), cols - np.float32(d.center[1]),
                          np.float32(d.size[0] / 2), np.float32(d.size[1] / 2))
        still = _paint(still, mask, d.color)
    step_y, step_x = _STEP[spec.direction]
    travelled = np.float32(spec.speed) * np.arange(spec.frames, dtype=np.float32)[:, None, None]
    centre_y = np.float32(spec.start[0]) + np.float32(step_y) * travelled
    centre_x = np.float32(spec.start[1]) + np.float32(step_x) * travelled
    mask = shape_mask(spec.shape, rows - centre_y, cols - centre_x, np.float32(spec.size[0] / 2),
                      np.float32(spec.size[1] / 2))
    clip = _paint(still, mask, spec.color)  # broadcasts the still picture over the T masks
    if spec.noise <= 0:
        return np.ascontiguousarray(clip)
    noise = np.random.default_rng(spec.noise_seed).standard_normal(clip.shape, dtype=np.float32)
    noisy = clip.astype(np.float32) + np.float32(spec.noise) * noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def render_clip(spec: ShapeClipSpec) -> torch.Tensor:
    """uint8 (T, H, W, 3) torch tensor of render_frames (what training, tests and the benchmarks take)."""
    import torch

    return torch.from_numpy(render_frames(spec))


def render_path(spec: ShapeClipSpec, legs: Sequence[tuple[str, int]]) -> torch.Tensor:
    """uint8 (T, H, W, 3): the spec's shape moving in each (direction, frames) leg in turn.

    Each leg starts where the previous one ended, at the spec's speed (its `direction` and
    `frames` are replaced by the legs'), so the direction of motion changes at known frames:
    the test video of a timeline. Noise is drawn afresh for each leg.
    """
    import torch

    parts, (row, col) = [], spec.start
    for leg, (direction, frames) in enumerate(legs):
        parts.append(render_frames(dataclasses.replace(spec, direction=direction, frames=frames, start=(row, col),
                                                       noise_seed=spec.noise_seed + leg)))
        step_y, step_x = _STEP[direction]
        row, col = row + step_y * spec.speed * frames, col + step_x * spec.speed * frames
    return torch.from_numpy(np.concatenate(parts))


def make_sample_clip(path: str | Path, direction: str = "left", frames: int = 16, height: int = 96,
                     width: int = 128, seed: int = 0) -> Path:
    """Write a random-looking clip of a shape moving in `direction`; same seed, same clip."""
    spec = random_spec(random.Random(seed), direction, frames=frames, height=height, width=width)
    write_video(path, render_frames(spec))
    return Path(path)
