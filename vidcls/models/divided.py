"""Divided space-time attention (TimeSformer): a quadratic baseline at O(T^2 S + T S^2) per layer.

Each block attends over time at every spatial position, then over space inside every
frame, then applies the MLP. The clip has one class token; for spatial attention it is
copied into every frame and the T outputs at its place are averaged back into one, so
every frame's spatial attention both reads and updates the clip summary.

Parameter names follow TimeSformer and timm's ViT (patch_embed.proj, cls_token,
pos_embed, time_embed, blocks.N.{temporal_norm, temporal_attn, temporal_fc, norm1, attn,
norm2, mlp}, norm, head) so checkpoints of either convert by renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vidcls.models import register
from vidcls.models.base import VideoClassifier, ViTConfig
from vidcls.models.layers import (
    Attention,
    DropPath,
    Mlp,
    TubeletEmbed,
    drop_path_rates,
    resize_cls_grid_embedding,
    resize_grid_embedding,
)


@dataclass
class DividedConfig(ViTConfig):
    """Hyper-parameters of the divided space-time ViT (defaults: TimeSformer ViT-B/16, 8 x 224)."""

    # TimeSformer zero-initialises temporal_fc in every block but the first, so a model
    # initialised from an image ViT starts out computing exactly that image ViT per frame.
    zero_init_temporal_fc: bool = True


class DividedBlock(nn.Module):
    """Temporal attention (own LN, qkv, proj, then temporal_fc), spatial attention, MLP.

    Tokens arrive as (B, 1 + T*S, C): the clip class token, then the patch tokens frame by
    frame, so the block is a plain token-sequence module like a ViT block.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, act: str,
                 drop_path: float, dropout: float, eps: float) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(dim, eps=eps)
        self.temporal_attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), act=act, dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        cls, patches = tokens[:, :1], rearrange(tokens[:, 1:], "b (t s) c -> b t s c", t=frames)

        # Time: each spatial position's T tokens form one sequence; the class token stays out.
        by_position = rearrange(patches, "b t s c -> b s t c")
        temporal = self.temporal_fc(self.temporal_attn(self.temporal_norm(by_position)))
        patches = patches + self.drop_path(rearrange(temporal, "b s t c -> b t s c"))

        # Space: each frame's sequence is its own copy of the class token plus its S patches.
        frame_seqs = torch.cat([cls[:, None].expand(-1, frames, -1, -1), patches], dim=2)
        spatial = self.attn(self.norm1(frame_seqs))
        update = torch.cat([spatial[:, :, 0].mean(dim=1, keepdim=True), spatial[:, :, 1:].flatten(1, 2)], dim=1)
        tokens = torch.cat([cls, patches.flatten(1, 2)], dim=1) + self.drop_path(update)

        return tokens + self.drop_path(self.mlp(self.norm2(tokens)))


@register("divided")
class DividedViT(VideoClassifier):
    """TimeSformer-style video ViT with divided space-time attention in every block."""

    Config = DividedConfig

    def __init__(self, config: DividedConfig) -> None:
        super().__init__(config)
        c = config
        self.patch_embed = TubeletEmbed(in_chans=c.in_chans, dim=c.embed_dim, patch=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (c.img_size // c.patch_size) ** 2, c.embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, c.num_frames, c.embed_dim))
        self.embed_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(DividedBlock(**c.block_options(), drop_path=rate)
                                    for rate in drop_path_rates(c.drop_path, c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.init_weights()

    def init_tables(self) -> list[nn.Parameter]:
        return [self.cls_token, self.pos_embed, self.time_embed]

    def init_weights(self) -> None:
        """The shared initialisation, then temporal_fc zeroed as the config asks (DividedConfig)."""
        super().init_weights()
        if self.config.zero_init_temporal_fc:
            for block in self.blocks[1:]:
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def embed(self, video: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, C, T, H, W) -> tokens (B, 1 + T*S, C) with position and time embeddings, and T."""
        c = self.config
        patches = self.patch_embed(video)  # (B, T, S, C)
        frames, size = video.shape[2], c.img_size // c.patch_size
        grid = (video.shape[3] // c.patch_size, video.shape[4] // c.patch_size)
        pos = resize_cls_grid_embedding(self.pos_embed, (size, size), grid, "divided").to(patches.dtype)
        time = resize_grid_embedding(self.time_embed, (c.num_frames,), (frames,), "divided").to(patches.dtype)
        patches = patches + pos[:, None, 1:] + time[:, :, None]
        cls = (self.cls_token + self.pos_embed[:, :1]).to(patches.dtype).expand(patches.shape[0], -1, -1)
        return self.embed_drop(torch.cat([cls, patches.flatten(1, 2)], dim=1)), frames

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised video -> final-normed tokens (B, 1 + T*S, C), class token first."""
        tokens, frames = self.embed(video)
        for block in self.blocks:
            tokens = self.run_block(block, tokens, frames)
        return self.norm(tokens)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The class token."""
        return features[:, 0]
