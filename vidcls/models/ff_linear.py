"""LVT: the Linear Video Transformer with Feature Fixation (Lu et al., 2022), and its plain baseline.

Every attention is kernelised linear attention, phi(z) = ReLU(z) + 1/sqrt(d), so the cost
grows linearly with the number of frames and patches. The paper's two additions, both
switchable so that the same module is also the plain `linear` baseline:

* feature fixation: per token, head and channel, a sigmoid gate computed from
  [phi(q); phi(k); v] rescales phi(q) and phi(k) before they are combined, letting linear
  attention concentrate on the features that matter (one gate for q and one for k, or a
  single shared gate);
* neighbourhood association: zero-cost channel shifts of K and V. Spatial attention gets
  channels from the previous and next frame, temporal attention from the 8 grid neighbours.

The shape (conv patch embedding with overlapping 16/14 patches and no spatial position
embedding, temporal-then-spatial blocks, depthwise-conv MLP, two-layer head) follows the
authors' code as summarised in docs/models.md section 1; the paper itself does not give it.
Unconfirmed against the authors' code, so kept as config options: the LayerNorm epsilon
(1e-6), the bias of the qkv projection (on), and the linear-attention epsilon (1e-6).
No video checkpoint has been published, so the zoo entries are architectures only.

Four options, off in LVT, let the same module be a student of a pretrained ViT video model
(`vidcls distill`, vidcls.train.transfer): `tubelet_size` (tokens of several frames, a Conv3d
patch embedding), `patch_norm` (LVT's LayerNorm after the patch embedding, off for a ViT's
tokens), `pos_embed` (a learned spatial or space-time position table) and `head_hidden = 0`
(no hidden head layer: the pooled feature goes straight to the classifier, as a ViT's does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import nn

from vidcls.models import register
from vidcls.models.base import VideoClassifier, VideoConfig
from vidcls.models.layers import (
    ConvMlp,
    DropPath,
    drop_path_rates,
    linear_attention,
    neighbour_shift_2d,
    relu_feature_map,
    resize_grid_embedding,
    temporal_channel_shift,
)
from vidcls.models.validate import Bounds, Choices


@dataclass
class FFLinearConfig(VideoConfig):
    """Hyper-parameters of LVT (defaults: the Kinetics-400 model, 16 frames x 224).

    qkv_bias (on) and layer_norm_eps (1e-6) are unconfirmed against the authors' code.
    """

    num_frames: int = 16  # length of the learned temporal embedding; other lengths interpolate it
    img_size: int = 224  # nominal frame size; any size runs (no spatial position embedding)
    embed_dim: int = 512
    num_heads: int = 8
    head_dropout: float = 0.5  # on the tokens before pooling and on the head's hidden layer
    patch_kernel: int = 16
    patch_stride: int = 14
    patch_padding: int = 8
    mlp_hidden: int = 2048
    fixation: bool = True  # feature-fixation gates on phi(q), phi(k)
    shared_gate: bool = False  # one gate for q and k (the K600 / SSv2 configs) instead of two
    neighbourhood: bool = True  # channel shifts of K and V across frames / grid neighbours
    shift_div: int = 8  # C // shift_div channels come from each of t+1 and t-1 (8 Kinetics, 4 SSv2)
    attn_eps: float = 1e-6  # added to the linear-attention normaliser
    head_hidden: int = 768  # 0: no hidden layer (pooled feature -> classifier, as in a ViT)
    # options for a student of a ViT video model (vidcls distill); LVT's values are the defaults
    tubelet_size: int = 1  # frames per token (a Conv3d patch embedding when > 1)
    patch_norm: bool = True  # LayerNorm on the patch embedding's tokens
    pos_embed: str = "none"  # none (LVT), spatial (1, S, C) or spacetime (1, T' S, C): a learned table

    limits: ClassVar[Bounds] = {**VideoConfig.limits, "patch_kernel": (1, 4096), "patch_stride": (1, 4096),
                                "patch_padding": (0, 4096), "mlp_hidden": (1, 1 << 20), "shift_div": (0, 65536),
                                "attn_eps": (1e-30, 1.0), "head_hidden": (0, 1 << 20), "tubelet_size": (1, 1024)}
    choices: ClassVar[Choices] = {**VideoConfig.choices, "pos_embed": ("none", "spatial", "spacetime")}

    def block_options(self) -> dict[str, Any]:
        return {**super().block_options(), "mlp_hidden": self.mlp_hidden, "fixation": self.fixation,
                "shared_gate": self.shared_gate, "neighbourhood": self.neighbourhood, "shift_div": self.shift_div,
                "attn_eps": self.attn_eps}


class ConvPatchEmbed(nn.Module):
    """Per-frame overlapping conv patch embedding, then LayerNorm: (B, C, T, H, W) -> (B, T, S, C).

    LVT's kernel 16 / stride 14 / padding 8 turns a 224 frame into a 17 x 17 grid whose
    patches overlap, instead of ViT's 14 x 14 disjoint ones. With tubelet > 1 one token
    covers that many frames (a Conv3d, as a VideoMAE / ViViT tubelet embedding): T' = T / tubelet.
    """

    def __init__(self, *, in_chans: int, dim: int, kernel: int, stride: int, padding: int, eps: float,
                 tubelet: int = 1, norm: bool = True) -> None:
        super().__init__()
        self.tubelet = tubelet
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding) if tubelet == 1 else \
            nn.Conv3d(in_chans, dim, (tubelet, kernel, kernel), (tubelet, stride, stride), (0, padding, padding))
        self.norm = nn.LayerNorm(dim, eps=eps) if norm else nn.Identity()

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens (B, T', h*w, C) and the token grid (h, w)."""
        if self.tubelet > 1:
            if video.shape[2] % self.tubelet:
                raise ValueError(f"{video.shape[2]} frames are not divisible by tubelet {self.tubelet}")
            maps = self.proj(video)
            grid = (maps.shape[-2], maps.shape[-1])
            return self.norm(rearrange(maps, "b c t h w -> b t (h w) c")), grid
        maps = self.proj(rearrange(video, "b c t h w -> (b t) c h w"))
        grid = (maps.shape[-2], maps.shape[-1])
        tokens = rearrange(maps, "(b t) c h w -> b t (h w) c", b=video.shape[0])
        return self.norm(tokens), grid


class FeatureFixation(nn.Module):
    """The fixation gate g = sigmoid(W_g [phi(q); phi(k); v] + b), W_g: 3d -> d shared by all heads.

    Returns (g_q * phi(q), g_k * phi(k)). The gate reads the query, key and value of the
    same token together, so it can damp channels that all three agree are uninformative.
    """

    def __init__(self, *, head_dim: int, shared: bool) -> None:
        super().__init__()
        self.gate_q = nn.Linear(3 * head_dim, head_dim)
        self.gate_k = None if shared else nn.Linear(3 * head_dim, head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k: phi-mapped heads (..., H, N, d); v: (..., H, N, d)."""
        context = torch.cat([q, k, v], dim=-1)
        gate_q = torch.sigmoid(self.gate_q(context))
        gate_k = gate_q if self.gate_k is None else torch.sigmoid(self.gate_k(context))
        return gate_q * q, gate_k * k


class FixationLinearAttention(nn.Module):
    """Multi-head linear attention along one axis of (B, T, S, C) tokens, with optional fixation.

    The other axes are a batch of independent sequences: axis 1 is temporal attention (the
    T frames of each spatial position), axis 2 spatial attention (the S tokens of a frame).
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, fixation: bool, shared_gate: bool,
                 eps: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.fixation = FeatureFixation(head_dim=dim // num_heads, shared=shared_gate) if fixation else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, axis: int,
                shift_kv: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Attend along `axis` of x (B, T, S, C).

        shift_kv (neighbourhood association) edits K and V after the projection and before
        phi and the gate, in the unfolded (B, T, S, C) layout: that is what lets it bring in
        tokens from the sequences the attention itself keeps apart.
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if shift_kv is not None:
            k, v = shift_kv(k), shift_kv(v)
        q, k, v = (rearrange(t.movedim(axis, -2), "... n (h d) -> ... h n d", h=self.num_heads)
                   for t in (q, k, v))
        q, k = relu_feature_map(q), relu_feature_map(k)
        if self.fixation is not None:
            q, k = self.fixation(q, k, v)
        out = rearrange(linear_attention(q, k, v, self.eps), "... h n d -> ... n (h d)").movedim(-2, axis)
        return self.proj_drop(self.proj(out))


class FFLinearBlock(nn.Module):
    """Pre-LN block of three residual branches: temporal attention, spatial attention, conv MLP."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, act: str, dropout: float, eps: float,
                 mlp_hidden: int, fixation: bool, shared_gate: bool, neighbourhood: bool, shift_div: int,
                 attn_eps: float, drop_path: float) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, dim, eps=eps)
        attention = partial(FixationLinearAttention, dim=dim, num_heads=num_heads, qkv_bias=qkv_bias,
                            fixation=fixation, shared_gate=shared_gate, eps=attn_eps, proj_drop=dropout)
        self.temporal_norm, self.temporal_attn = norm(), attention()
        self.spatial_norm, self.spatial_attn = norm(), attention()
        self.mlp_norm = norm()
        self.mlp = ConvMlp(dim=dim, hidden=mlp_hidden, act=act, dropout=dropout)
        self.drop_path = DropPath(drop_path)
        self.neighbourhood = neighbourhood
        self.shift_div = shift_div

    def temporal(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The temporal attention branch (before its residual): K / V from the 8 grid neighbours."""
        from_grid = partial(neighbour_shift_2d, grid=grid) if self.neighbourhood else None
        return self.temporal_attn(self.temporal_norm(x), axis=1, shift_kv=from_grid)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial attention branch (before its residual): K / V channels from frames t-1, t+1."""
        from_frames = (partial(temporal_channel_shift, fold_div=self.shift_div, dim=1)
                       if self.neighbourhood else None)
        return self.spatial_attn(self.spatial_norm(x), axis=2, shift_kv=from_frames)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: (B, T, S, C) tokens on a per-frame (h, w) grid."""
        x = x + self.drop_path(self.temporal(x, grid))
        x = x + self.drop_path(self.spatial(x))
        return x + self.drop_path(self.mlp(self.mlp_norm(x), grid))


@register("ff-linear")
class FFLinearTransformer(VideoClassifier):
    """LVT video classifier: video (B, C, T, H, W) -> logits (B, num_classes)."""

    Config = FFLinearConfig

    def __init__(self, config: FFLinearConfig) -> None:
        super().__init__(config)
        c = config
        if c.neighbourhood and c.shift_div < 2:
            raise ValueError(f"shift_div must be >= 2; got {c.shift_div}")
        if self.token_grid(c.img_size, c.img_size)[0] < 1:
            raise ValueError(f"patch kernel {c.patch_kernel} / padding {c.patch_padding} does not fit "
                             f"a {c.img_size} px frame")
        self.patch_embed = ConvPatchEmbed(in_chans=c.in_chans, dim=c.embed_dim, kernel=c.patch_kernel,
                                          stride=c.patch_stride, padding=c.patch_padding, eps=c.layer_norm_eps,
                                          tubelet=c.tubelet_size, norm=c.patch_norm)
        self.time_embed = nn.Parameter(torch.zeros(1, c.num_frames // c.tubelet_size, 1, c.embed_dim))
        self.pos_embed = None if c.pos_embed == "none" else \
            nn.Parameter(torch.zeros(1, math.prod(self._pos_grid()), c.embed_dim))
        self.blocks = nn.ModuleList(FFLinearBlock(**c.block_options(), drop_path=rate)
                                    for rate in drop_path_rates(c.drop_path, c.depth))
        self.token_drop = nn.Dropout(c.head_dropout)
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.pre_logits = nn.Sequential(nn.Linear(c.embed_dim, c.head_hidden), nn.GELU()) if c.head_hidden \
            else nn.Identity()
        self.head = nn.Linear(c.head_hidden or c.embed_dim, c.num_classes)
        self.init_weights()

    def init_tables(self) -> list[nn.Parameter]:
        return [self.time_embed] + ([self.pos_embed] if self.pos_embed is not None else [])

    def fan_in_layers(self) -> list[nn.Module]:
        return [self.pre_logits, self.head]

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) patch grid the conv patch embedding makes of a height x width frame."""
        c = self.config
        return tuple((size + 2 * c.patch_padding - c.patch_kernel) // c.patch_stride + 1
                     for size in (height, width))

    def time_embedding(self, frames: int) -> torch.Tensor:
        """The (1, frames, 1, C) temporal embedding (frames: token steps, T / tubelet_size), interpolated
        (with a warning) off the configured length."""
        table = resize_grid_embedding(self.time_embed.flatten(1, 2), (self.time_embed.shape[1],), (frames,),
                                      "ff-linear temporal embedding")
        return table.unsqueeze(2)

    def _pos_grid(self) -> tuple[int, ...]:
        """The grid the position table is laid out on at the configured shape: (h, w) or (T', h, w)."""
        c = self.config
        space = self.token_grid(c.img_size, c.img_size)
        return space if c.pos_embed == "spatial" else (c.num_frames // c.tubelet_size, *space)

    def position_embedding(self, steps: int, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, steps or 1, h*w, C) position table for a token grid, interpolated off the configured one."""
        new_grid = grid if self.config.pos_embed == "spatial" else (steps, *grid)
        table = resize_grid_embedding(self.pos_embed, self._pos_grid(), new_grid, "ff-linear position embedding")
        return table.reshape(1, -1, grid[0] * grid[1], table.shape[-1])

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised video -> tokens (B, T, S, C) on each frame's patch grid."""
        if video.ndim != 5 or video.shape[1] != self.config.in_chans:
            raise ValueError(f"expected a video (B, {self.config.in_chans}, T, H, W); got {tuple(video.shape)}")
        tokens, grid = self.patch_embed(video)
        tokens = tokens + self.time_embedding(tokens.shape[1]).to(tokens.dtype)
        if self.pos_embed is not None:
            tokens = tokens + self.position_embedding(tokens.shape[1], grid).to(tokens.dtype)
        for block in self.blocks:
            tokens = self.run_block(block, tokens, grid)
        return tokens

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Token dropout, mean over space and time, LayerNorm, then the head's hidden layer (Linear, GELU;
        none with head_hidden = 0)."""
        return self.pre_logits(self.fc_norm(self.token_drop(features).mean(dim=(1, 2))))
