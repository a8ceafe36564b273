"""Joint space-time attention ViT (ViViT model 1 / VideoMAE layout): the quadratic baseline.

Every token attends to every other token of the clip, so attention costs O((T*S)^2):
the model a user would pick instead of a linear video transformer, and the reference
point of the scaling report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vidcls.models import register
from vidcls.models.base import VideoClassifier, ViTConfig
from vidcls.models.layers import (
    Block,
    TubeletEmbed,
    drop_path_rates,
    resize_cls_grid_embedding,
    resize_grid_embedding,
    sinusoid_table,
)
from vidcls.models.validate import Bounds, Choices


@dataclass
class JointConfig(ViTConfig):
    """Hyper-parameters of the joint space-time ViT (defaults: ViT-B/16, 8 frames x 224)."""

    tubelet_size: int = 1
    qkv_bias: bool | str = True  # "qv": q and v biases only (VideoMAE)
    cls_token: bool = True
    pos_embed: str = "learned"  # "learned" (ViViT) or "sinusoidal" (VideoMAE, fixed, not stored)
    pool: str = "cls"  # "cls" (ViViT) or "mean" over tokens followed by fc_norm (VideoMAE)
    mlp_activation: str = "gelu"  # "gelu_tanh" for ViViT checkpoints
    fc_norm_eps: float | None = None  # None: layer_norm_eps (VideoMAE's fc_norm uses 1e-5, its blocks 1e-12)

    limits: ClassVar[Bounds] = {**ViTConfig.limits, "tubelet_size": (1, 1024), "fc_norm_eps": (1e-30, 1.0)}
    choices: ClassVar[Choices] = {**ViTConfig.choices, "qkv_bias": (True, False, "qv"),
                                  "pos_embed": ("learned", "sinusoidal"), "pool": ("cls", "mean")}


@register("joint")
class JointViT(VideoClassifier):
    """Video ViT with full attention over all T'*S tokens of a clip."""

    Config = JointConfig

    def __init__(self, config: JointConfig) -> None:
        super().__init__(config)
        if config.pool == "cls" and not config.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        c = config
        self.patch_embed = TubeletEmbed(in_chans=c.in_chans, dim=c.embed_dim, patch=c.patch_size,
                                        tubelet=c.tubelet_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.cls_token else None
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self._num_positions(self._grid()), c.embed_dim))
        else:  # computed, not stored: a buffer so it follows .to(device) but stays out of the state dict
            table = sinusoid_table(self._num_positions(self._grid()), c.embed_dim)[None]
            self.register_buffer("pos_table", table, persistent=False)
        self.blocks = nn.ModuleList(Block(**c.block_options(), drop_path=rate)
                                    for rate in drop_path_rates(c.drop_path, c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps) if c.pool == "cls" else nn.Identity()
        fc_eps = c.layer_norm_eps if c.fc_norm_eps is None else c.fc_norm_eps
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=fc_eps) if c.pool == "mean" else nn.Identity()
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.init_weights()

    def init_tables(self) -> list[nn.Parameter]:
        learned = [self.pos_embed] if self.config.pos_embed == "learned" else []
        return learned + ([self.cls_token] if self.cls_token is not None else [])

    def _grid(self, frames: int | None = None, height: int | None = None, width: int | None = None):
        c = self.config
        return ((frames or c.num_frames) // c.tubelet_size, (height or c.img_size) // c.patch_size,
                (width or c.img_size) // c.patch_size)

    def _num_positions(self, grid: tuple[int, int, int]) -> int:
        return grid[0] * grid[1] * grid[2] + (1 if self.config.cls_token else 0)

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Position table for a token grid (t', h, w), interpolated off the training shape.

        The fixed sinusoidal table is interpolated too rather than recomputed for the new
        length: it numbers tokens t*h*w in raster order, so a fresh table for another
        frame size would hand each patch the position of a different one.
        """
        table = self.pos_embed if self.config.pos_embed == "learned" else self.pos_table
        if self.cls_token is None:
            return resize_grid_embedding(table, self._grid(), grid, "joint")
        return resize_cls_grid_embedding(table, self._grid(), grid, "joint")

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised video -> tokens (B, [1 +] T'*S, C), final-normed with pool="cls"."""
        tokens = self.patch_embed(video).flatten(1, 2)  # (B, T'*S, C)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        grid = self._grid(*video.shape[2:])
        tokens = tokens + self.position_embedding(grid).to(tokens.dtype)
        for block in self.blocks:
            tokens = self.run_block(block, tokens)
        return self.norm(tokens)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The class token (ViViT), or the mean of the patch tokens through fc_norm (VideoMAE)."""
        if self.config.pool == "cls":
            return features[:, 0]
        start = 1 if self.cls_token is not None else 0
        return self.fc_norm(features[:, start:].mean(dim=1))
