"""The VidTr authors' compact checkpoint layout (gluonmm `vidtr_compact.py`, C-VidTr-S / -M) -> vidtr-compact.

Same key names as their split model (vidtr.py here) for the stem, the blocks and the head;
one class token `cls` (1, 1, C) and one position table `pos_embedding` (1, 1 + T S, C)
instead of cls_s / cls_t and a (T+1) x (S+1) grid.

Two things their code fixes leave no trace in the tensors: the patch grid (their code
hard-codes 14 x 14, i.e. 224 px with 16 px patches; --arch img_size=... for another) from
which the frame count follows, and the pooling schedule, which is C-VidTr-S's for 8 frames
and C-VidTr-M's for 16 (vidcls.models.vidtr_compact.AUTHORS_POOLING); any other frame count
needs --arch pool_layers=[...] pool_tau=[...]. Their separable and their late joint
layers hold the same key names, so a wrong schedule loads without complaint and only the
logits tell: check them against their code where it matters.

Mapped from the key names of the authors' public code and tested on a checkpoint with that
layout built in the tests, not on the released files.
"""

from __future__ import annotations

from typing import Any

import torch

from vidcls.errors import VidclsError
from vidcls.models.vidtr_compact import AUTHORS_POOLING
from vidcls.zoo.convert.keys import compile_rules, rename_state
from vidcls.zoo.convert.vidtr import SHARED_RULES

FAMILY = "vidtr-compact"
SIGNATURE = ("conv_stem.weight", "cls", "pos_embedding")
AUTHORS_IMAGE_SIZE = 224  # their 14 x 14 patch grid

_RULES = compile_rules([(r"^cls$", "cls_token"), *SHARED_RULES])


def matches(state: dict[str, torch.Tensor]) -> bool:
    return all(key in state for key in SIGNATURE)


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The authors' state dict -> (ours, their keys we have no place for)."""
    return rename_state(state, _RULES)


def arch_hints(state: dict[str, torch.Tensor], given: dict[str, Any]) -> dict[str, Any]:
    """Frames, image size, pooling schedule and their code's constants, given the converted
    state dict and the user's --arch (which wins over everything here)."""
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    size = int(given.get("img_size", AUTHORS_IMAGE_SIZE))
    patches, positions = (size // patch) ** 2, int(state["pos_embed"].shape[1]) - 1
    if positions % patches:
        raise VidclsError(f"the position table holds {positions} patch positions, not a whole number of "
                          f"{size} px frames ({patches} patches each); pass --arch img_size=...")
    frames = positions // patches
    hints: dict[str, Any] = {"num_frames": frames, "img_size": size, "layer_norm_eps": 1e-5,
                             "mlp_activation": "relu"}
    if frames in AUTHORS_POOLING:
        hints["pool_layers"], hints["pool_tau"] = map(list, AUTHORS_POOLING[frames])
    elif "pool_layers" not in given or "pool_tau" not in given:
        raise VidclsError(f"{frames} frames: not one of the authors' C-VidTr variants "
                          f"({', '.join(map(str, AUTHORS_POOLING))} frames); pass --arch pool_layers=[...] "
                          f"pool_tau=[...]")
    return hints
