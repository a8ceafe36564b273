"""Transforms against plain per-pixel expectations."""

import pytest
import torch

from vidcls.video.transforms import (
    crop_offsets,
    eval_views,
    fit_frame,
    normalize,
    resize_frames,
    resize_short_side,
    spatial_crops,
    to_channels_first,
)


def test_to_channels_first_scales_and_moves_axes():
    frames = torch.randint(0, 256, (2, 4, 5, 6, 3), dtype=torch.uint8)
    video = to_channels_first(frames)
    assert video.shape == (2, 3, 4, 5, 6)
    assert torch.allclose(video[1, 2, 3, 4, 5], frames[1, 3, 4, 5, 2].float() / 255)


@pytest.mark.parametrize("h,w,size,expected", [(48, 64, 32, (32, 43)), (64, 48, 32, (43, 32)),
                                               (32, 32, 32, (32, 32)), (16, 20, 32, (32, 40))])
def test_resize_short_side_keeps_aspect(h, w, size, expected):
    video = torch.rand(3, 2, h, w)
    assert resize_short_side(video, size).shape[-2:] == expected


def test_resize_constant_image_stays_constant():
    video = torch.full((3, 2, 40, 60), 0.25)
    assert torch.allclose(resize_short_side(video, 20), torch.full((3, 2, 20, 30), 0.25), atol=1e-6)


def test_crop_offsets():
    assert crop_offsets(10, 4, 1) == [3]
    assert crop_offsets(10, 4, 3) == [0, 3, 6]
    with pytest.raises(ValueError):
        crop_offsets(3, 4, 1)


def test_three_crop_takes_left_centre_right_of_wide_frames():
    video = torch.arange(8 * 12, dtype=torch.float32).reshape(1, 1, 8, 12)
    crops = spatial_crops(video, 8, 3)
    assert crops.shape == (3, 1, 1, 8, 8)
    assert torch.equal(crops[0], video[..., :, 0:8])
    assert torch.equal(crops[1], video[..., :, 2:10])
    assert torch.equal(crops[2], video[..., :, 4:12])


def test_three_crop_takes_top_centre_bottom_of_portrait_frames():
    video = torch.arange(12 * 8, dtype=torch.float32).reshape(1, 1, 12, 8)
    crops = spatial_crops(video, 8, 3)
    assert torch.equal(crops[0], video[..., 0:8, :])
    assert torch.equal(crops[2], video[..., 4:12, :])


def test_normalize_per_channel():
    video = torch.ones(3, 1, 2, 2)
    out = normalize(video, (0.5, 0.0, 1.0), (0.5, 2.0, 1.0))
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([1.0, 0.5, 0.0]))


def test_eval_views_shape_and_order():
    clips = torch.randint(0, 256, (2, 4, 24, 40, 3), dtype=torch.uint8)
    views = eval_views(clips, 16, 3, (0.5,) * 3, (0.5,) * 3)
    assert views.shape == (6, 3, 4, 16, 16)
    # view order is crop-major: view 0 = crop 0 of clip 0, view 1 = crop 0 of clip 1
    resized = resize_short_side(to_channels_first(clips), 16)
    assert torch.allclose(views[1], (resized[1, :, :, :, 0:16] - 0.5) / 0.5)


def test_squash_keeps_the_whole_field_of_view():
    video = torch.zeros(3, 1, 20, 80)
    video[..., :, 76:] = 1.0  # a bright band at the right edge
    squashed = fit_frame(video, 16, "squash")
    assert squashed.shape[-2:] == (16, 16) and squashed[..., :, -1].mean() > 0.5
    cropped = spatial_crops(fit_frame(video, 16, "crop"), 16, 1)[0]
    assert cropped.max() == 0.0  # the centre crop of the kept-aspect frame loses the band
    with pytest.raises(ValueError, match="aspect"):
        fit_frame(video, 16, "stretch")


def test_eval_views_squash_is_one_full_frame_view():
    clips = torch.randint(0, 256, (1, 2, 30, 90, 3), dtype=torch.uint8)
    views = eval_views(clips, 16, 1, (0.0,) * 3, (1.0,) * 3, aspect="squash")
    assert views.shape == (1, 3, 2, 16, 16)
    assert torch.allclose(views[0], resize_frames(to_channels_first(clips[0]), 16, 16))
