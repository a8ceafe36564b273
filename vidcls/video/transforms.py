"""Frame preprocessing on torch tensors only (no torchvision): resize, crop into views, normalise.

Decoded clips arrive as uint8 (clips, T, H, W, 3); models take float (views, 3, T, size, size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vidcls.choices import ASPECTS as ASPECTS  # re-exported


def to_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float32 (..., 3, T, H, W) in [0, 1]."""
    return frames.movedim(-1, -4).float().div_(255.0)


def resize_frames(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize every frame of (..., C, T, H, W) to height x width (antialiased bilinear).

    Antialiasing keeps downscaled fine texture (and small moving shapes) from aliasing.
    """
    *lead, c, t, h, w = video.shape
    if (height, width) == (h, w):
        return video
    frames = video.reshape(-1, c, t, h, w).transpose(1, 2).reshape(-1, c, h, w)
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False,
                           antialias=True)
    return frames.reshape(-1, t, c, height, width).transpose(1, 2).reshape(*lead, c, t, height, width)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (..., C, T, H, W) so the shorter side is `size`, keeping the aspect ratio."""
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    return resize_frames(video, max(size, round(h * scale)), max(size, round(w * scale)))




def fit_frame(video: torch.Tensor, side: int, aspect: str = "crop") -> torch.Tensor:
    """Bring frames to the scale views are cut from.

    "crop" (the papers' recipe) resizes the short side to `side` and keeps the aspect ratio,
    so square crops lose the ends of the long side; "squash" resizes the whole frame to
    side x side, keeping the full field of view (right for labels that depend on where
    things go in the frame, such as a direction of motion).
    """
    if aspect == "crop":
        return resize_short_side(video, side)
    if aspect == "squash":
        return resize_frames(video, side, side)
    raise ValueError(f"unknown aspect {aspect!r}; choose from {ASPECTS}")


def crop_offsets(length: int, size: int, crops: int) -> list[int]:
    """Start offsets of `crops` windows of `size` along an axis: centre for 1, ends+centre for 3."""
    if size > length:
        raise ValueError(f"crop {size} larger than side {length}")
    if crops == 1:
        return [(length - size) // 2]
    return [round(i * (length - size) / (crops - 1)) for i in range(crops)]


def spatial_crops(video: torch.Tensor, size: int, crops: int) -> torch.Tensor:
    """(..., C, T, H, W) -> (crops, ..., C, T, size, size) square windows along the longer side.

    crops=1 is the centre crop; crops=3 is the left/centre/right (or top/centre/bottom)
    3-crop test of the video transformer papers.
    """
    h, w = video.shape[-2:]
    if w >= h:
        top = (h - size) // 2
        views = [video[..., top:top + size, x:x + size] for x in crop_offsets(w, size, crops)]
    else:
        left = (w - size) // 2
        views = [video[..., y:y + size, left:left + size] for y in crop_offsets(h, size, crops)]
    return torch.stack(views)


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel (x - mean) / std on (..., C, T, H, W)."""
    shape = (-1, 1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=video.dtype, device=video.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=video.dtype, device=video.device).reshape(shape)
    return (video - mean_t) / std_t


def eval_views(clips: torch.Tensor, size: int, crops: int, mean: Sequence[float],
               std: Sequence[float], resize: int | None = None, aspect: str = "crop") -> torch.Tensor:
    """Decoded clips uint8 (N, T, H, W, 3) -> normalised views (N * crops, 3, T, size, size).

    Frames are fitted to `resize` (default `size`, see fit_frame), then `crops` windows are
    cut, so N temporal clips x crops spatial crops give the papers' multi-view test.
    """
    return crop_views(fit_frame(to_channels_first(clips), resize or size, aspect), size, crops, mean, std)


def fitted_frame(frame: torch.Tensor, side: int, aspect: str = "crop") -> torch.Tensor:
    """One decoded frame uint8 (H, W, 3) -> float (3, h, w) fitted as eval_views fits it.

    Applied by the decoder to each frame as it arrives (video.read_frames' frame_fn), so a
    4K clip never exists at full size as a whole; the values equal eval_views' exactly.
    """
    return fit_frame(to_channels_first(frame[None]), side, aspect)[:, 0]


def crop_views(video: torch.Tensor, size: int, crops: int, mean: Sequence[float],
               std: Sequence[float]) -> torch.Tensor:
    """Fitted clips float (N, 3, T, h, w) -> normalised views (N * crops, 3, T, size, size)."""
    views = spatial_crops(video, size, crops)  # (crops, N, C, T, size, size)
    return normalize(views.flatten(0, 1), mean, std)


def random_crop(video: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A `size` x `size` window of (..., C, T, H, W) at a uniformly random position."""
    h, w = video.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} larger than frame {h}x{w}")
    top = int(torch.randint(h - size + 1, (1,), generator=generator))
    left = int(torch.randint(w - size + 1, (1,), generator=generator))
    return video[..., top:top + size, left:left + size]


def train_view(clip: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float],
               generator: torch.Generator, resize: int | None = None,
               scale: tuple[float, float] = (1.0, 1.25), flip: bool = True,
               aspect: str = "crop") -> torch.Tensor:
    """One augmented training view: uint8 (T, H, W, 3) -> normalised (3, T, size, size).

    Scale jitter: the frame is fitted (see fit_frame) to a random length in scale x `resize` (default
    `size`) before a random crop, so the model sees the objects of eval_views' centre crop
    at other sizes and positions. `flip` mirrors the clip left-right with probability 1/2;
    turn it off when labels name a direction (Something-Something's "left to right").
    All randomness comes from `generator`, so a (seed, sample) pair always gives one view.
    """
    low, high = scale
    short = round((resize or size) * (low + (high - low) * float(torch.rand((), generator=generator))))
    video = random_crop(fit_frame(to_channels_first(clip), max(size, short), aspect), size, generator)
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        video = video.flip(-1)
    return normalize(video, mean, std)
