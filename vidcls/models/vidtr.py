"""VidTr: separable space-time attention on a (T+1) x (S+1) token grid, with topK_std pooling.

The clip is a grid of tokens: row 0 holds temporal class tokens, column 0 of rows 1..T the
spatial class tokens, and the classifier reads token (0, 0). Each block attends along
time inside every column (S+1 sequences of T+1), then along space inside every row
(T+1 sequences of S+1), so attention memory grows with T^2 + S^2 rather than (T S)^2.

C-VidTr shortens the clip inside the network (topK_std pooling): at chosen layers the
temporal attention keeps, per head and per spatial column, the class row plus the tau
rows whose attention over the keys is the least uniform (largest standard deviation),
in temporal order; later layers run on tau + 1 rows.

Choices not fixed by the paper or checked against the authors' code (the first two are
config options):
- (unconfirmed) one residual around both attentions, x + MSA_s(MSA_t(LN(x))), as in a
  DETR-style encoder layer; `separate_residuals` gives temporal attention its own LN and
  residual instead.
- (unconfirmed) how the residual is pooled when heads keep different rows
  (`residual_pool`): "head" (default) gives each head's d-channel slice of the residual
  the rows that head kept, matching the channel slice its attention output occupies before
  the output projection mixes heads; "mean" averages, over heads, the residual rows the
  heads kept.
- (unconfirmed) temporal and spatial attention have their own qkv / proj weights (both can
  be inflated from the image ViT's attention). This gives VidTr-S 114 M parameters and
  208 GMACs per 8 x 224 view; one qkv / proj per block, applied once as in a ViT block,
  would give a ViT-B's 86 M and about 150 GMACs, the direct count quoted in the spec. The
  authors' code does the latter: `attention="shared"` below (86.1 M parameters, 87.5 M with
  their full-grid position table; 158 GMACs by vidcls.bench.count_macs).
- (unconfirmed) one learned class token fills all class positions; the position and time
  embeddings, added over the whole grid, tell the class positions apart.

The authors' released (non-compact) model, amazon-science/gluonmm `vidtr_split.py`, is
available as options (`vidcls convert` sets them for their checkpoints):
- `attention="shared"`: one q/k/v projection and one output projection per block
  (`blocks.N.attn.qkv` / `.proj`). Temporal attention runs in every column with those q, k,
  v; spatial attention runs in every row with the same q, k and, as values, the temporal
  attention's output; heads are merged and projected once. No pooling.
- `embedding="attention_input"`: separate temporal (`cls_t`, row 0, one per column) and
  spatial (`cls_s`, column 0 of rows 1..T) class tokens, and one position table over the
  whole (T+1) x (S+1) grid (`pos_embed`, (1, (T+1)(S+1), C), row-major) added to the
  normalised block input before the q/k/v projection (so to v too), never to the residual
  tokens: in the first block only, or in every block with `pos_every_layer` (their 16-frame
  models). Such a model runs at its configured frame count and size only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from vidcls.models import register
from vidcls.models.base import VideoClassifier, ViTConfig
from vidcls.models.layers import (
    Attention,
    Block,
    DropPath,
    Mlp,
    TubeletEmbed,
    drop_path_rates,
    folded_sdpa,
    resize_cls_grid_embedding,
)
from vidcls.models.validate import Bounds, Choices

RESIDUAL_POOLS = ("head", "mean")
ATTENTIONS = ("separate", "shared")
EMBEDDINGS = ("tokens", "attention_input")


@dataclass
class VidTrConfig(ViTConfig):
    """Hyper-parameters of VidTr (defaults: VidTr-S, ViT-B body, 8 frames x 224, no pooling)."""

    mlp_activation: str = "relu"  # the authors' code uses ReLU
    head_dropout: float = 0.5
    pool_layers: tuple[int, ...] = ()  # 0-indexed blocks with topK_std pooling (C-VidTr)
    pool_tau: tuple[int, ...] = ()  # frames kept by each of those blocks
    residual_pool: str = "head"  # (unconfirmed) see the module docstring
    separate_residuals: bool = False  # (unconfirmed) see the module docstring
    attention: str = "separate"  # "separate": own temporal qkv / proj; "shared": the authors' block
    embedding: str = "tokens"  # "tokens": added to the grid once; "attention_input": the authors'
    pos_every_layer: bool = False  # with embedding="attention_input": positions in every block

    limits: ClassVar[Bounds] = {**ViTConfig.limits, "pool_layers": (0, 255), "pool_tau": (1, 1024)}
    choices: ClassVar[Choices] = {**ViTConfig.choices, "residual_pool": RESIDUAL_POOLS, "attention": ATTENTIONS,
                                  "embedding": EMBEDDINGS}


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (..., N, d), rows (..., K) integer indices -> x[..., rows, :] of shape (..., K, d)."""
    return x.gather(-2, rows[..., None].expand(*rows.shape, x.shape[-1]))


def temporal_affinity(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) of (..., N, d) queries and keys -> (..., N, N)."""
    return torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)


def most_selective_rows(affinity: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` rows of an attention matrix (..., N, N) with the largest standard deviation
    over the keys, as (..., keep) indices in temporal order.

    A row with a large deviation attends to a few frames in particular, so it carries
    temporal structure; a nearly uniform row is an average of the clip and can be dropped.
    """
    return affinity.std(dim=-1).topk(keep, dim=-1).indices.sort(dim=-1).values


def topk_std_rows(q: torch.Tensor, k: torch.Tensor, tau: int) -> torch.Tensor:
    """Rows kept by topK_std pooling: row 0 plus the tau most selective of rows 1..N-1.

    q, k: (..., H, N, d) with row 0 the class row. Returns (..., H, tau + 1) indices in
    temporal order, chosen per head and per leading index.
    """
    kept = most_selective_rows(temporal_affinity(q, k)[..., 1:, :], tau) + 1
    return torch.cat([torch.zeros_like(kept[..., :1]), kept], dim=-1)


def pool_residual(x: torch.Tensor, rows: torch.Tensor, mode: str) -> torch.Tensor:
    """Keep the rows `rows` (B, S, H, K) of the residual x (B, S, N, C) -> (B, S, K, C).

    Heads may keep different rows; `mode` says how the residual follows them (module docstring).
    """
    heads = rows.shape[-2]
    if mode == "head":
        per_head = rearrange(x, "b s n (h d) -> b s h n d", h=heads)
        return rearrange(gather_rows(per_head, rows), "b s h k d -> b s k (h d)")
    return gather_rows(x[:, :, None].expand(-1, -1, heads, -1, -1), rows).mean(dim=2)


class SeparableBlock(nn.Module):
    """Temporal attention per column, spatial attention per row, MLP; optionally topK_std pooling.

    Tokens are (B, T+1, S+1, C); with pooling to tau the block returns (B, tau+1, S+1, C).
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, act: str,
                 drop_path: float, dropout: float, eps: float, tau: int | None, residual_pool: str,
                 separate_residuals: bool) -> None:
        super().__init__()
        self.tau = tau
        self.residual_pool = residual_pool
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.temporal_attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.temporal_norm = nn.LayerNorm(dim, eps=eps) if separate_residuals else None
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), act=act, dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def temporal(self, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention along each column (B, S, N, C) -> (B, S, K, C) and the kept rows (or None).

        With pooling only the kept rows' queries are attended with, over all N keys: the
        output of a dropped row is never computed.
        """
        q, k, v = self.temporal_attn.heads_qkv(columns)  # (B, S, H, N, d)
        rows = None
        if self.tau is not None and self.tau < q.shape[-2] - 1:
            rows = topk_std_rows(q, k, self.tau)
            q = gather_rows(q, rows)
        return self.temporal_attn.attend(q, k, v), rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = rearrange(x, "b t s c -> b s t c")
        norm = self.norm1 if self.temporal_norm is None else self.temporal_norm
        mixed, rows = self.temporal(norm(columns))
        if rows is not None:
            columns = pool_residual(columns, rows, self.residual_pool)
        x, mixed = rearrange(columns, "b s t c -> b t s c"), rearrange(mixed, "b s t c -> b t s c")
        if self.temporal_norm is not None:  # separate residuals: time first, then space from LN(x)
            x = x + self.drop_path(mixed)
            mixed = self.norm1(x)
        x = x + self.drop_path(self.attn(mixed))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SharedSeparableBlock(Block):
    """The authors' block: one q/k/v projection for temporal and spatial attention, one output projection.

    x + proj(spatial(q, k, temporal(q, k, v))) with q, k, v from LN(x) (+ positions), then the
    MLP: a ViT block's weights used another way. Tokens are (B, T+1, S+1, C).
    """

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T+1, S+1, C); pos (1, T+1, S+1, C) is added to LN(x) before the projection."""
        h = self.norm1(x)
        if pos is not None:
            h = h + pos
        q, k, v = self.attn.heads_qkv(h)  # (B, T+1, H, S+1, d): rows
        drop = self.attn.attn_drop if self.training else 0.0
        by_column = [rearrange(t, "b t h s d -> b s h t d") for t in (q, k, v)]
        temporal = rearrange(folded_sdpa(*by_column, drop), "b s h t d -> b t h s d")
        x = x + self.drop_path(self.attn.attend(q, k, temporal))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@register("vidtr")
class VidTr(VideoClassifier):
    """Video transformer with separable attention on a (T+1) x (S+1) grid; C-VidTr with pooling."""

    Config = VidTrConfig

    def __init__(self, config: VidTrConfig) -> None:
        super().__init__(config)
        c = config
        taus = self._pool_schedule()
        self._check_variant()
        patches = (c.img_size // c.patch_size) ** 2
        self.patch_embed = TubeletEmbed(in_chans=c.in_chans, dim=c.embed_dim, patch=c.patch_size)
        if c.embedding == "tokens":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + patches, c.embed_dim))
            self.time_embed = nn.Parameter(torch.zeros(1, 1 + c.num_frames, c.embed_dim))
        else:  # the authors' layout and shapes
            self.cls_t = nn.Parameter(torch.zeros(1, 1 + patches, c.embed_dim))
            self.cls_s = nn.Parameter(torch.zeros(c.num_frames, 1, c.embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, (1 + c.num_frames) * (1 + patches), c.embed_dim))
        self.embed_drop = nn.Dropout(c.dropout)
        rates = drop_path_rates(c.drop_path, c.depth)
        if c.attention == "shared":
            self.blocks = nn.ModuleList(SharedSeparableBlock(**c.block_options(), drop_path=rate) for rate in rates)
        else:
            self.blocks = nn.ModuleList(
                SeparableBlock(**c.block_options(), drop_path=rate, tau=taus.get(i), residual_pool=c.residual_pool,
                               separate_residuals=c.separate_residuals)
                for i, rate in enumerate(rates))
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.init_weights()

    def init_tables(self) -> list[nn.Parameter]:
        if self.config.embedding == "tokens":
            return [self.cls_token, self.pos_embed, self.time_embed]
        return [self.cls_t, self.cls_s, self.pos_embed]

    def _check_variant(self) -> None:
        """The attention / embedding combinations that are defined (module docstring)."""
        c = self.config
        if c.attention == "shared" and (c.pool_layers or c.separate_residuals):
            raise ValueError("attention='shared' (the authors' VidTr block) supports neither pooling "
                             "(pool_layers; their compact model is another module) nor separate_residuals")
        if c.embedding == "attention_input" and c.attention != "shared":
            raise ValueError("embedding='attention_input' needs attention='shared' (the authors' block)")
        if c.pos_every_layer and c.embedding != "attention_input":
            raise ValueError("pos_every_layer needs embedding='attention_input'")

    def _pool_schedule(self) -> dict[int, int]:
        """Block index -> frames kept; a tau not below the frames present at run time keeps them all."""
        c = self.config
        schedule = dict(zip(c.pool_layers, c.pool_tau, strict=False))  # unequal lengths: refused just below
        if len(c.pool_layers) != len(c.pool_tau) or len(schedule) != len(c.pool_layers):
            raise ValueError("pool_layers and pool_tau must pair up, one distinct layer per tau")
        if any(not 0 <= layer < c.depth for layer in schedule) or any(tau < 1 for tau in schedule.values()):
            raise ValueError(f"pool layers must lie in 0..{c.depth - 1} and pool_tau be >= 1")
        return schedule

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the token grid (B, T+1, S+1, C) with class tokens and embeddings."""
        c = self.config
        patches = self.patch_embed(video)  # (B, T, S, C)
        batch, frames = patches.shape[:2]
        size, grid = c.img_size // c.patch_size, (video.shape[3] // c.patch_size, video.shape[4] // c.patch_size)
        cls = self.cls_token.to(patches.dtype)
        grid_tokens = torch.cat([cls[:, None].expand(batch, frames, -1, -1), patches], dim=2)
        grid_tokens = torch.cat([cls[:, None].expand(batch, -1, grid_tokens.shape[2], -1), grid_tokens], dim=1)
        pos = resize_cls_grid_embedding(self.pos_embed, (size, size), grid, "vidtr").to(patches.dtype)
        time = resize_cls_grid_embedding(self.time_embed, (c.num_frames,), (frames,), "vidtr").to(patches.dtype)
        return self.embed_drop(grid_tokens + pos[:, None] + time[:, :, None])

    def embed_attention_input(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' embedding: (B, C, T, H, W) -> the grid (B, T+1, S+1, C) with class tokens
        cls_t (row 0) and cls_s (column 0 of rows 1..T), and the positions (1, T+1, S+1, C)."""
        c = self.config
        patches = self.patch_embed(video)  # (B, T, S, C)
        batch, frames, spatial = patches.shape[:3]
        if frames != c.num_frames or spatial != self.cls_t.shape[1] - 1:
            raise ValueError(f"this VidTr (embedding='attention_input') runs on {c.num_frames} frames of "
                             f"{c.img_size} px only, got {frames} frames of {spatial} patches")
        cls_s = self.cls_s.to(patches.dtype)[None].expand(batch, -1, -1, -1)
        cls_t = self.cls_t.to(patches.dtype)[None].expand(batch, -1, -1, -1)
        grid = torch.cat([cls_t, torch.cat([cls_s, patches], dim=2)], dim=1)
        pos = self.pos_embed.to(patches.dtype).reshape(1, frames + 1, spatial + 1, -1)
        return self.embed_drop(grid), pos

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised video -> the final-normed token grid (B, T'+1, S+1, C),
        T' the frames left after pooling."""
        if self.config.embedding == "attention_input":
            tokens, pos = self.embed_attention_input(video)
            for i, block in enumerate(self.blocks):
                tokens = self.run_block(block, tokens, pos if i == 0 or self.config.pos_every_layer else None)
        else:
            tokens = self.embed(video)
            for block in self.blocks:
                tokens = self.run_block(block, tokens)
        return self.norm(tokens)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The class token at grid position (0, 0)."""
        return features[:, 0, 0]
