"""ImageNet initialisation of the video families from timm's image ViT weights, without timm.

`vidcls train --init imagenet` starts joint, divided, xvit, vidtr and vidtr-compact from the ImageNet-21k
ViT-B/16 of timm (hf://timm/vit_base_patch16_224.augreg_in21k, a safetensors file read
with our own key mapping). Our families already use timm's block names (blocks.N.norm1,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2), so the mapping is mostly the identity;
what a video model adds is filled in so that, at the start, it computes the image model
frame by frame:

- patch embedding: a Conv2d kernel inflated over the tubelet's time axis, either all on
  the central frame (ViViT's "central frame" init) or split evenly over the frames
  (I3D's average inflation; a static clip then gives the image model's tokens);
- position table: resized to the model's grid, then tiled over time where the model keeps
  one entry per (time, space) token (joint attention, the VidTr authors' compact model);
  time embeddings start at zero;
- temporal attention (divided, vidtr) starts as a copy of the block's spatial attention
  and its LayerNorm; TimeSformer's temporal projection (temporal_fc) starts at zero in
  every block, so each block starts as the image block;
- the 21k-class head is dropped: heads (and X-ViT's temporal attention head) keep their
  initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidcls.choices import INFLATIONS
from vidcls.errors import UsageError, VidclsError
from vidcls.models.base import VideoClassifier
from vidcls.models.layers import resize_cls_grid_embedding

IMAGENET_REF = "hf://timm/vit_base_patch16_224.augreg_in21k"
FAMILIES = ("joint", "divided", "xvit", "vidtr", "vidtr-compact")


@dataclass
class InitReport:
    """Which of the model's tensors came from the image model, and which kept their initialisation."""

    source: str
    loaded: list[str]
    kept: list[str]


def inflate_patch(weight: torch.Tensor, frames: int, how: str) -> torch.Tensor:
    """Conv2d kernel (C, 3, p, p) -> Conv3d kernel (C, 3, frames, p, p)."""
    if how == "average":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    inflated = weight.new_zeros(weight.shape[0], weight.shape[1], frames, *weight.shape[2:])
    inflated[:, :, frames // 2] = weight
    return inflated


def _depth(state: dict[str, torch.Tensor]) -> int:
    return len({key.split(".")[1] for key in state if key.startswith("blocks.")})


def _source_key(key: str) -> str:
    """Our key -> the timm key it starts from (temporal attention from the spatial one)."""
    return key.replace("temporal_attn.", "attn.").replace("temporal_norm.", "norm1.").replace("fc_norm.", "norm.")


def _position_table(image_pos: torch.Tensor, module: VideoClassifier, target: torch.Tensor) -> torch.Tensor:
    """timm's (1, 1 + S0, C) table -> the model's `target` table: resized to its grid, and tiled
    over time where the model has one entry per (time, space) token (joint, vidtr-compact)."""
    config = module.config
    side0, side = int(round((image_pos.shape[1] - 1) ** 0.5)), config.img_size // config.patch_size
    table = resize_cls_grid_embedding(image_pos, (side0, side0), (side, side), "imagenet init")
    if target.shape[1] == table.shape[1]:
        return table
    times, with_cls = divmod(target.shape[1], side * side)
    patch_pos = table[:, 1:].repeat(1, times, 1)
    return torch.cat([table[:, :1], patch_pos], dim=1) if with_cls else patch_pos


def map_image_state(image: dict[str, torch.Tensor], module: VideoClassifier, inflate: str = "central"
                    ) -> dict[str, torch.Tensor]:
    """A timm ViT state dict -> the tensors of `module` that the image model determines."""
    if inflate not in INFLATIONS:
        raise UsageError(f"inflation must be one of {', '.join(INFLATIONS)}, not {inflate!r}")
    family = getattr(module, "family", None)
    if family not in FAMILIES:
        raise UsageError(f"no ImageNet initialisation for family {family!r}; supported: {', '.join(FAMILIES)}")
    expected = module.state_dict()
    if "patch_embed.proj.weight" not in image:
        raise VidclsError("not a timm ViT state dict (no patch_embed.proj.weight)")
    image_patch, our_patch = image["patch_embed.proj.weight"].shape, expected["patch_embed.proj.weight"][:, :, 0].shape
    if image_patch != our_patch or _depth(image) != _depth(expected):
        raise VidclsError(f"the image model (patch kernel {tuple(image_patch)}, depth {_depth(image)}) does not fit "
                          f"the {family} model (patch kernel {tuple(our_patch)}, depth {_depth(expected)})")
    classifier = f"{module.classifier_name}."
    mapped: dict[str, torch.Tensor] = {}
    for key, target in expected.items():
        source = _source_key(key)
        if key.startswith(classifier):
            continue  # the 21k-class classifier is dropped; ours keeps its initialisation
        if key == "time_embed" or ".temporal_fc." in key:
            mapped[key] = torch.zeros_like(target)
        elif key == "patch_embed.proj.weight":
            mapped[key] = inflate_patch(image[source], target.shape[2], inflate)
        elif key == "pos_embed":
            mapped[key] = _position_table(image[source], module, target)
        elif source in image:
            mapped[key] = image[source]
    wrong = sorted(k for k, v in mapped.items() if v.shape != expected[k].shape)
    if wrong:
        raise VidclsError(f"the image model does not fit the {family} model: wrong shape for {', '.join(wrong[:3])}"
                          f"{' ...' if len(wrong) > 3 else ''}")
    return mapped


def init_from_image_state(module: VideoClassifier, image: dict[str, torch.Tensor], inflate: str = "central",
                          source: str = "state dict") -> InitReport:
    """Load what an image ViT determines into `module` in place; the rest keeps its initialisation."""
    from vidcls.zoo.modeldir import check_weights

    mapped = map_image_state(image, module, inflate)
    check_weights(module, mapped, source)
    module.load_state_dict(mapped, strict=False)
    return InitReport(source=source, loaded=sorted(mapped), kept=sorted(set(module.state_dict()) - set(mapped)))
