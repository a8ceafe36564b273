"""Joint space-time attention ViT (ViViT model 1 / VideoMAE layout): the quadratic baseline.

Every token attends to every other token of the clip, so attention costs O((T*S)^2):
the model a user would pick instead of a linear video transformer, and the reference
point of the scaling report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register
from .layers import (Block, TubeletEmbed, ViTConfig, drop_path_rates, init_vit_weights,
                     resize_cls_grid_embedding, resize_grid_embedding, sinusoid_table)


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


@register("joint")
class JointViT(nn.Module):
    """Video ViT with full attention over all T'*S tokens of a clip."""

    Config = JointConfig

    def __init__(self, config: JointConfig) -> None:
        super().__init__()
        if config.pool not in ("cls", "mean") or config.pos_embed not in ("learned", "sinusoidal"):
            raise ValueError(f"bad pool {config.pool!r} or pos_embed {config.pos_embed!r}")
        if config.pool == "cls" and not config.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        self.config = c = config
        self.patch_embed = TubeletEmbed(c.in_chans, c.embed_dim, c.patch_size, c.tubelet_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.cls_token else None
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self._num_positions(self._grid()), c.embed_dim))
        else:  # computed, not stored: a buffer so it follows .to(device) but stays out of the state dict
            table = sinusoid_table(self._num_positions(self._grid()), c.embed_dim)[None]
            self.register_buffer("pos_table", table, persistent=False)
        rates = drop_path_rates(c.drop_path, c.depth)
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.mlp_activation, rate, c.dropout,
                  c.layer_norm_eps) for rate in rates)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps) if c.pool == "cls" else nn.Identity()
        fc_eps = c.layer_norm_eps if c.fc_norm_eps is None else c.fc_norm_eps
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=fc_eps) if c.pool == "mean" else nn.Identity()
        self.head_drop = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.apply(init_vit_weights)
        if c.pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

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
        """(B, C, T, H, W) normalised video -> pooled clip feature (B, C)."""
        tokens = self.patch_embed(video).flatten(1, 2)  # (B, T'*S, C)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        grid = self._grid(*video.shape[2:])
        tokens = tokens + self.position_embedding(grid).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        if self.config.pool == "cls":
            return self.norm(tokens)[:, 0]
        start = 1 if self.cls_token is not None else 0
        return self.fc_norm(tokens[:, start:].mean(dim=1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(video)))
