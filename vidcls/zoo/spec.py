"""The input recipe of a model (InputSpec): a plain dataclass, importable without torch.

`vidcls models` lists the zoo's recipes without importing torch, so the recipe's fields and
defaults live here; checking a recipe as it is made (vidcls.models.validate) imports torch then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from vidcls.choices import ASPECTS, CROPS, MAX_CLIPS, MAX_FRAMES, MAX_STRIDE, SAMPLINGS, Bounds, Choices
from vidcls.errors import VidclsError, printable


@dataclass(frozen=True)
class InputSpec:
    """How a model expects its clips: the recipe of the paper or training run it comes from."""

    frames: int = 8
    stride: int = 1  # frames between samples for dense sampling (the papers' 8x8, 16x4, 32x2)
    sampling: str = "segment"  # "segment": spread over the whole video; "dense": frames x stride
    size: int = 224
    resize: int | None = None  # short side before cropping; None = size
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    clips: int = 1  # test-time temporal clips of the recipe
    crops: int = 1  # test-time spatial crops of the recipe
    aspect: str = "crop"  # "crop": keep aspect, cut square crops; "squash": whole frame to size x size

    # Bounds of the fields (vidcls.models.validate): every clip the recipe asks for is decoded,
    # so frames x clips x crops x size^2 is what one video costs in memory.
    limits: ClassVar[Bounds] = {"frames": (1, MAX_FRAMES), "stride": (1, MAX_STRIDE), "size": (1, 4096),
                                "resize": (1, 8192), "mean": (-1e3, 1e3), "std": (1e-6, 1e3), "clips": (1, MAX_CLIPS)}
    # resize is the short side frames are scaled to before the crop: within this factor of `size`
    # (the papers use 1.14: 256 for 224), or a 32 px model would hold 8192 px frames
    max_resize_ratio: ClassVar[int] = 4
    choices: ClassVar[Choices] = {"sampling": SAMPLINGS, "aspect": ASPECTS, "crops": CROPS}

    def __post_init__(self) -> None:
        """Checked as it is made (types, bounds, finite mean / std with std > 0); mean and std
        are kept as tuples of floats whatever sequence of numbers they were given as."""
        from vidcls.models.validate import check_fields  # imports torch; the defaults do not

        check_fields(self, "input", self.limits, self.choices)
        if self.resize is not None and self.resize > self.max_resize_ratio * self.size:
            raise VidclsError(f"input.resize = {self.resize} is out of range: at most {self.max_resize_ratio} x "
                              f"input.size = {self.max_resize_ratio * self.size} (frames are scaled to it, then "
                              f"cropped)")
        for key in ("mean", "std"):
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        if not isinstance(data, dict):
            raise VidclsError(f"input must be an object of input options, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VidclsError(f"unknown input option(s) {printable(', '.join(map(str, unknown)))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def input_defaults() -> dict[str, Any]:
    """The recipe's fields and their defaults, without making (and so checking) an InputSpec."""
    return {f.name: f.default for f in dataclasses.fields(InputSpec)}
