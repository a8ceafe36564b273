"""vidcls.video.synthetic: moving-shape clips, their random specs, and writing them as video."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from vidcls.choices import DIRECTIONS
from vidcls.errors import VidclsError
from vidcls.video.decode import load_clips, probe, read_frames
from vidcls.video.encode import write_video
from vidcls.video.synthetic import SHAPES, ShapeClipSpec, make_sample_clip, random_spec, render_clip, shape_mask


def plain_spec(direction: str, **overrides) -> ShapeClipSpec:
    """White shape on black, no noise or distractors: the shape is exactly the non-zero pixels."""
    values = dict(direction=direction, frames=8, height=48, width=64, shape="circle",
                  color=(255, 255, 255), background=(0, 0, 0), noise=0.0, speed=2.0,
                  size=(12.0, 12.0), start=(24.0, 32.0))
    return ShapeClipSpec(**{**values, **overrides})


def centroids(clip: torch.Tensor) -> torch.Tensor:
    """(T, 2) centre (row, column) of the pixels that differ from the first pixel's colour."""
    mask = (clip != clip[0, 0, 0]).any(-1).float()
    rows = torch.arange(clip.shape[1], dtype=torch.float32)[None, :, None]
    cols = torch.arange(clip.shape[2], dtype=torch.float32)[None, None, :]
    area = mask.sum((1, 2))
    return torch.stack([(mask * rows).sum((1, 2)) / area, (mask * cols).sum((1, 2)) / area], dim=1)


def test_render_clip_shape_dtype_and_determinism():
    spec = random_spec(random.Random(5), frames=6, height=40, width=56)
    clip = render_clip(spec)
    assert clip.shape == (6, 40, 56, 3) and clip.dtype == torch.uint8
    assert torch.equal(clip, render_clip(spec))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_shape_moves_in_the_named_direction(direction):
    centre = centroids(render_clip(plain_spec(direction)))
    step = centre[1:] - centre[:-1]
    expected = {"left": (0, -2), "right": (0, 2), "up": (-2, 0), "down": (2, 0)}[direction]
    assert torch.allclose(step, torch.tensor(expected, dtype=torch.float32).expand_as(step), atol=0.5)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_random_clips_move_the_named_way_with_noise_and_distractors(direction):
    """The moving shape alone (rendered over a plain background) drifts the right way."""
    along = {"left": (1, -1), "right": (1, 1), "up": (0, -1), "down": (0, 1)}[direction]
    for seed in range(4):
        spec = random_spec(random.Random(seed), direction)
        assert spec.direction == direction
        plain = render_clip(dataclasses.replace(spec, noise=0.0, distractors=()))
        centre = centroids(plain)
        axis, sign = along
        assert sign * (centre[-1, axis] - centre[0, axis]) > 0.5 * spec.speed * (spec.frames - 1)


def test_random_spec_keeps_the_shape_inside_and_visible():
    for seed in range(300):
        spec = random_spec(random.Random(seed), frames=16)
        assert 32 <= spec.height <= 128 and 32 <= spec.width <= 128
        assert all(abs(c - b) >= 64 for c, b in zip(spec.color, spec.background, strict=True))
        step_y, step_x = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[spec.direction]
        travel = spec.speed * (spec.frames - 1)
        for t in (0, travel):
            y, x = spec.start[0] + step_y * t, spec.start[1] + step_x * t
            assert spec.size[0] / 2 - 1e-6 <= y <= spec.height - spec.size[0] / 2 + 1e-6
            assert spec.size[1] / 2 - 1e-6 <= x <= spec.width - spec.size[1] / 2 + 1e-6
    specs = [random_spec(random.Random(seed)) for seed in range(100)]
    assert {s.shape for s in specs} == set(SHAPES)
    assert {s.direction for s in specs} == set(DIRECTIONS)
    assert any(s.height != s.width for s in specs) and any(s.noise > 0 for s in specs)
    assert any(s.distractors for s in specs)


def test_random_spec_accepts_torch_generators_and_overrides():
    a = random_spec(torch.Generator().manual_seed(1), "up", height=20, width=30, shape="cross")
    b = random_spec(torch.Generator().manual_seed(1), "up", height=20, width=30, shape="cross")
    assert a == b and (a.direction, a.height, a.width, a.shape) == ("up", 20, 30, "cross")
    with pytest.raises(TypeError):
        random_spec(random.Random(0), colour=(1, 2, 3))
    with pytest.raises(ValueError):
        plain_spec("sideways")


def test_every_shape_has_its_own_mask():
    dy = torch.arange(-10, 11, dtype=torch.float32)[:, None]
    dx = torch.arange(-10, 11, dtype=torch.float32)[None, :]
    masks = {shape: shape_mask(shape, dy, dx, 8.0, 8.0) for shape in SHAPES}
    areas = {shape: int(m.sum()) for shape, m in masks.items()}
    assert all(area > 20 for area in areas.values())
    assert len({tuple(m.flatten().tolist()) for m in masks.values()}) == len(SHAPES)
    assert areas["square"] == max(areas.values())


def test_write_video_round_trip_with_odd_size(tmp_path):
    clip = render_clip(plain_spec("right", height=33, width=47, start=(16.0, 10.0)))
    path = tmp_path / "odd.mp4"
    write_video(path, clip, fps=12, crf=0)
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]  # no temporary file left behind
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (48, 34, 8, 12.0)  # padded to even
    decoded = read_frames(path, range(8))
    assert (decoded[:, :33, :47].float() - clip.float()).abs().mean() < 3


def test_write_video_failure_leaves_nothing(tmp_path):
    with pytest.raises(VidclsError):
        write_video(tmp_path / "bad.mp4", render_clip(plain_spec("up")), codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", torch.zeros(2, 8, 8, 3))  # float frames


def test_make_sample_clip_is_decodable(tmp_path):
    path = make_sample_clip(tmp_path / "sample.mp4", direction="down", seed=3)
    assert path == tmp_path / "sample.mp4"
    info = probe(path)
    assert (info.width, info.height, info.num_frames) == (128, 96, 16)
    clips, _ = load_clips(path, frames=8)
    assert clips.shape == (1, 8, 96, 128, 3)
