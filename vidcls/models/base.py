"""What every model family shares: one config base and timm's classifier interface.

Training, export, benchmarking and fine-tuning reach a model only through this interface, so
a new family works with all of them by implementing two methods:

- `forward_features(video)`: the backbone. Normalised video (B, C, T, H, W) -> its output
  tokens, unpooled, in the family's own layout (last axis `num_features`): (B, N, C) for
  joint and divided, per-frame sequences (B, T, N, C) for X-ViT, the token grid
  (B, T+1, S+1, C) for VidTr, (B, T, S, C) for LVT.
- `pool(features)`: the family's pooling up to the feature the classifier reads (a class
  token, a mean, X-ViT's temporal attention head, LVT's mean + LayerNorm + MLP).

The base class supplies the rest, the same for every family: `forward_head` (pool, head
dropout, classifier; `pre_logits=True` stops before the classifier), `forward`,
`get_classifier` / `reset_classifier`, `num_classes` / `num_features`, activation
checkpointing of the blocks (`set_grad_checkpointing`) and `init_weights`, whose
family-specific parts are the `init_tables` / `fan_in_layers` hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidcls.models.layers import ACTIVATIONS, init_vit_weights, reset_to_default_init
from vidcls.models.validate import Bounds, Choices, check_divisible, check_fields


@dataclass(kw_only=True)
class VideoConfig:
    """Hyper-parameters every family has (defaults: a ViT-B body, 8 frames x 224, 400 classes).

    Each family's config extends it, overriding a default where its paper differs; the
    field names are the keys of a model directory's config.json and of models.yaml `arch`.
    """

    num_classes: int = 400
    num_frames: int = 8  # the length learned time / position tables are sized for
    img_size: int = 224
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    qkv_bias: bool = True
    mlp_activation: str = "gelu"
    layer_norm_eps: float = 1e-6
    drop_path: float = 0.0  # stochastic depth of the last block, rising linearly from 0 at the first
    dropout: float = 0.0  # after the attention projections and inside the MLPs
    head_dropout: float = 0.0  # on the pooled feature, before the classifier

    # Bounds and vocabularies of the fields (vidcls.models.validate): wide enough for any real
    # model, narrow enough that a typo or a hostile config fails in one line instead of in
    # the allocator. A family extends them for its own fields; a numeric field without bounds
    # fails the test suite.
    limits: ClassVar[Bounds] = {
        "num_classes": (1, 1_000_000), "num_frames": (1, 1024), "img_size": (1, 4096), "in_chans": (1, 64),
        "embed_dim": (1, 65536), "depth": (1, 256), "num_heads": (1, 1024), "layer_norm_eps": (1e-30, 1.0),
        "drop_path": (0.0, 1.0), "dropout": (0.0, 1.0), "head_dropout": (0.0, 1.0)}
    choices: ClassVar[Choices] = {"mlp_activation": tuple(ACTIVATIONS)}

    def __post_init__(self) -> None:
        """Every config is checked as it is made: see vidcls.models.validate."""
        check_fields(self, "arch", self.limits, self.choices)
        check_divisible(self)

    def block_options(self) -> dict[str, Any]:
        """Keyword arguments of the family's blocks that come straight from the config
        (each block adds its own drop_path rate), named as the blocks name them."""
        return {"dim": self.embed_dim, "num_heads": self.num_heads, "qkv_bias": self.qkv_bias,
                "act": self.mlp_activation, "dropout": self.dropout, "eps": self.layer_norm_eps}


@dataclass(kw_only=True)
class ViTConfig(VideoConfig):
    """The families built on a ViT body: square patches and an MLP sized by ratio (ViT-B/16 defaults)."""

    patch_size: int = 16
    mlp_ratio: float = 4.0

    limits: ClassVar[Bounds] = {**VideoConfig.limits, "patch_size": (1, 4096), "mlp_ratio": (0.01, 64.0)}

    def block_options(self) -> dict[str, Any]:
        return {**super().block_options(), "mlp_ratio": self.mlp_ratio}


class VideoClassifier(nn.Module, ABC):
    """Base of every family: video (B, C, T, H, W) -> logits (B, num_classes), timm's interface.

    A family sets `Config`, builds its layers (its head dropout is `self.head_drop`, its
    classifier the nn.Linear at `classifier_name`), runs its blocks through `run_block`, and
    calls `self.init_weights()` once at the end of __init__.
    """

    Config: ClassVar[type[VideoConfig]]
    family: ClassVar[str]  # set by @register
    classifier_name: str = "head"  # dotted path of the final nn.Linear

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.config = config
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(config.head_dropout)

    # ------------------------------------------------------------ what a family implements

    @abstractmethod
    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised video (B, C, T, H, W) -> unpooled output tokens, last axis num_features."""

    @abstractmethod
    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """forward_features' tokens -> the (B, F) feature head dropout and the classifier read."""

    # ------------------------------------------------------------ the shared interface

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, head dropout, classifier; with pre_logits, the (B, F) input of the classifier."""
        pooled = self.head_drop(self.pool(features))
        return pooled if pre_logits else self.get_classifier()(pooled)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(video))

    @property
    def num_classes(self) -> int:
        return self.get_classifier().out_features

    @property
    def num_features(self) -> int:
        """Width of forward_features' tokens."""
        return self.config.embed_dim

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for `num_classes`, initialised as `init_weights`
        initialises it; every other weight is kept (fine-tuning on another label set)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        if not any(layer is old for module in self.fan_in_layers() for layer in module.modules()):
            init_vit_weights(new)
        parent, _, name = self.classifier_name.rpartition(".")
        setattr(self.get_submodule(parent), name, new)
        self.config = replace(self.config, num_classes=num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them:
        training memory then grows with one block, not the whole depth (long clips)."""
        self.grad_checkpointing = enable

    def run_block(self, block: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """block(x, *args), through activation checkpointing when it is on and autograd records.

        Non-reentrant checkpointing restores the RNG state for the recomputation, so dropout
        and drop-path draw the same masks twice and gradients equal those without it.
        """
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    # ------------------------------------------------------------ initialisation

    def init_weights(self) -> None:
        """The family's random initialisation, called once at the end of __init__.

        ViT's init of every Linear and LayerNorm, then a std-0.02 truncated normal for the
        learned tables and tokens (`init_tables`, in that order), then PyTorch's fan-in init
        for the layers of a multi-layer head (`fan_in_layers`). Convolutions keep PyTorch's.
        """
        self.apply(init_vit_weights)
        for table in self.init_tables():
            nn.init.trunc_normal_(table, std=0.02)
        reset_to_default_init(*self.fan_in_layers())

    def init_tables(self) -> list[nn.Parameter]:
        """Learned tokens and embedding tables drawn from N(0, 0.02) (a table left out stays zero)."""
        return []

    def fan_in_layers(self) -> list[nn.Module]:
        """Modules of a multi-layer classifier head whose Linears keep PyTorch's fan-in scaled
        init (see layers.reset_to_default_init); reset_classifier initialises the classifier alike."""
        return []
