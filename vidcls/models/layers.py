"""Building blocks shared by every model family.

Each family file composes these pieces; nothing here knows about a particular family.
Tensors inside the backbones are laid out token-last: (..., N, C), so one attention module
serves a whole clip (joint), one frame (spatial) or one spatial position (temporal) just by
folding the other axes into the batch.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the sigmoid approximation of GELU that CLIP (and so X-CLIP) was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# gelu_tanh is the tanh approximation of GELU that ViViT checkpoints were trained with
# (transformers calls it "gelu_fast"); using exact GELU instead shifts their logits. quick_gelu is CLIP's.
ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": partial(nn.GELU, approximate="tanh"), "relu": nn.ReLU,
               "quick_gelu": QuickGELU}


def activation(name: str) -> nn.Module:
    """The MLP non-linearity by config name (VidTr uses ReLU, ViViT tanh-GELU, the others GELU)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Transformer feed-forward block: fc1 -> activation -> fc2."""

    def __init__(self, *, dim: int, hidden: int, act: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def folded_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Softmax attention of (..., H, N, d) heads through SDPA.

    SDPA's fused kernels take (batch, heads, tokens, d): with more leading axes it falls back
    to its unfused math path (3-4x slower on CPU), so shared leading axes are folded into one.
    """
    lead = q.shape[:-3]
    if len(lead) <= 1 or not k.shape[:-3] == v.shape[:-3] == lead:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    out = F.scaled_dot_product_attention(*(t.flatten(0, -4) for t in (q, k, v)), dropout_p=dropout)
    return out.unflatten(0, lead)


class Attention(nn.Module):
    """Multi-head softmax self-attention over the second-to-last axis, through SDPA.

    Split into `heads_qkv` and `attend` so families that edit K and V between projection
    and attention (X-ViT's space-time mixing, VidTr's pooling) reuse the same weights and
    kernels instead of re-implementing attention.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool | str = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        """qkv_bias: True, False, or "qv" for biases on q and v only (VideoMAE / BEiT): a key
        bias adds the same constant to every score of a query, which softmax cancels."""
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be true, false or 'qv', not {qkv_bias!r}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias is True)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias == "qv" else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias == "qv" else None
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N, C) -> (..., N, 3C): the fused q, k, v projection, with a zero key bias for "qv"."""
        if self.q_bias is None:
            return self.qkv(x)
        weight = self.qkv.weight  # in bf16 with the rest in fp32 after devices.cast_module: computed in its dtype
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]).to(weight.dtype)
        return F.linear(x.to(weight.dtype), weight, bias)

    def heads_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., N, C) -> q, k, v of shape (..., H, N, d)."""
        qkv = rearrange(self.project_qkv(x), "... n (three h d) -> three ... h n d", three=3, h=self.num_heads)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax attention of (..., H, N, d) heads, merged and projected back to (..., N, C)."""
        out = folded_sdpa(q, k, v, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(out, "... h n d -> ... n (h d)")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(*self.heads_qkv(x))


class Block(nn.Module):
    """Pre-LayerNorm ViT block: x + attn(LN(x)), then x + mlp(LN(x)).

    `attn` replaces the plain `Attention` with a variant of the same interface and
    parameter names (X-ViT's space-time mixing), so such a family keeps this block as is.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool | str = True,
                 act: str = "gelu", drop_path: float = 0.0, dropout: float = 0.0, eps: float = 1e-6,
                 attn: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn if attn is not None else Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias,
                                                            proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), act=act, dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate per layer, rising linearly to max_rate (the ViT/DeiT recipe)."""
    return [max_rate * i / max(depth - 1, 1) for i in range(depth)]


class TubeletEmbed(nn.Module):
    """Cut a clip into (tubelet x patch x patch) tubes and project each to a token.

    tubelet = 1 is a per-frame ViT patch embedding; tubelet = 2 is the VideoMAE / ViViT layout.
    Returns tokens (B, T', S, C) so callers choose how to fold time and space.
    """

    def __init__(self, *, in_chans: int, dim: int, patch: int, tubelet: int = 1) -> None:
        super().__init__()
        self.patch = patch
        self.tubelet = tubelet
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch),
                              stride=(tubelet, patch, patch))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = video.shape
        if t % self.tubelet or h % self.patch or w % self.patch:
            raise ValueError(f"input {t}x{h}x{w} is not divisible by tubelet {self.tubelet} "
                             f"and patch {self.patch}")
        return rearrange(self.proj(video), "b c t h w -> b t (h w) c")


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of 'Attention is all you need', (positions, dim)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).double() / dim)
    angles = pos * rates
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()


def resize_grid_embedding(embed: torch.Tensor, grid: tuple[int, ...], new_grid: tuple[int, ...],
                          what: str) -> torch.Tensor:
    """Interpolate a learned position table laid out on a (t, h, w) or (h, w) grid.

    embed: (1, prod(grid), C). Lets a model trained at one frame count or size run at
    another; warns because accuracy off the training shape is not what was measured.
    """
    if tuple(grid) == tuple(new_grid):
        return embed
    warnings.warn(f"{what}: interpolating position embedding from grid {tuple(grid)} to "
                  f"{tuple(new_grid)}; the model was trained at the former", stacklevel=3)
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(grid)]
    table = embed.reshape(1, *grid, -1).movedim(-1, 1).float()
    table = F.interpolate(table, size=tuple(new_grid), mode=mode, align_corners=False)
    return table.movedim(1, -1).reshape(1, math.prod(new_grid), -1).to(embed.dtype)


def resize_cls_grid_embedding(embed: torch.Tensor, grid: tuple[int, ...], new_grid: tuple[int, ...],
                              what: str) -> torch.Tensor:
    """`resize_grid_embedding` for a table (1, 1 + prod(grid), C) whose entry 0 is a class token's.

    The class entry has no place on the grid, so it is kept as is and only the rest is resized.
    """
    if tuple(grid) == tuple(new_grid):
        return embed
    return torch.cat([embed[:, :1], resize_grid_embedding(embed[:, 1:], grid, new_grid, what)], dim=1)


def reset_to_default_init(*modules: nn.Module) -> None:
    """PyTorch's default fan-in scaled init for the Linear layers of a multi-layer classifier head.

    Two stacked std-0.02 layers (init_vit_weights) shrink the gradient reaching the
    backbone about 100-fold at initialisation, which leaves training from scratch on a long
    plateau at chance; a fan-in scaled init keeps that gradient of order one.
    """
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases, unit LayerNorms (the ViT initialisation)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------- linear attention


def relu_feature_map(z: torch.Tensor) -> torch.Tensor:
    """The linear-attention kernel phi(z) = ReLU(z) + 1/sqrt(d), d = z.shape[-1].

    The positive offset keeps every feature above zero, so the normaliser
    phi(q)^T sum_j phi(k_j) never vanishes even where the ReLU part of a whole head is zero.
    """
    return F.relu(z) + z.shape[-1] ** -0.5


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Kernelised attention out_i = q_i^T (sum_j k_j v_j^T) / (q_i^T sum_j k_j + eps).

    q, k: (..., N, d) ALREADY passed through a non-negative feature map such as
    `relu_feature_map`; phi is left to the caller because LVT's feature fixation rescales
    phi(q) and phi(k) between the feature map and this product. v: (..., N, e).
    Summing k_j v_j^T over the sequence first costs O(N d e) and never builds the N x N
    attention matrix, which is what makes the cost linear in the number of tokens.
    """
    context = k.transpose(-2, -1) @ v  # (..., d, e)
    normaliser = q @ k.sum(dim=-2).unsqueeze(-1)  # (..., N, 1)
    return (q @ context) / (normaliser + eps)


# ---------------------------------------------------------------- zero-cost token mixing


def read_neighbour(x: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """out[..., i, ...] = x[..., i + offset, ...] along each (dim, offset); zero where that is outside x.

    One constant pad does the move: padding one side by a negative amount crops it, the
    other side is filled with zeros. Unlike torch.roll nothing wraps round, and unlike
    writing slices into a zero tensor the backward pass is one pad too, not a fill plus copy.
    """
    pad = [0] * (2 * x.ndim)
    for dim, offset in offsets:
        slot = 2 * (x.ndim - 1 - dim % x.ndim)  # F.pad lists (before, after) from the last axis back
        pad[slot], pad[slot + 1] = -offset, offset
    return F.pad(x, pad)


def temporal_channel_shift(x: torch.Tensor, fold_div: int, dim: int = 1) -> torch.Tensor:
    """Mix each token with the same token of the neighbouring frames by moving channels (TSM).

    x: (B, T, ..., C) with the time axis at `dim` (any axis but the last, the channel axis).
    With fold = C // fold_div, channels [0, fold) of frame t are read from frame t+1,
    channels [fold, 2*fold) from frame t-1 and the rest stay; what would come from
    outside the clip is zero. LVT applies it to the keys and values of spatial attention
    and X-ViT to those of every layer, so a frame's attention sees its neighbours at no
    extra multiply-add.
    """
    if fold_div < 2:
        raise ValueError(f"fold_div must be >= 2 (two folds of C // fold_div channels move); got {fold_div}")
    fold = x.shape[-1] // fold_div
    from_next, from_previous, stay = x.split([fold, fold, x.shape[-1] - 2 * fold], dim=-1)
    return torch.cat([read_neighbour(from_next, [(dim, 1)]), read_neighbour(from_previous, [(dim, -1)]), stay],
                     dim=-1)


# (row, column) offset of the grid neighbour that each group of C // 16 channels is read from:
# up, down, left, right, then the four diagonals.
NEIGHBOUR_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def neighbour_shift_2d(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mix each token with its 8 grid neighbours by moving channels (a spatial TSM).

    x: (..., S, C) with the S = h * w tokens of one frame in row-major order. Group g of
    C // 16 channels (g = 0..7, in NEIGHBOUR_OFFSETS order) is read from the neighbour at
    NEIGHBOUR_OFFSETS[g]; the remaining channels (half of them when 16 divides C) stay.
    Positions off the grid read zero. LVT gives temporal attention, which otherwise sees
    one spatial position only, this view of the surrounding patches. The loop runs over the
    eight directions, never over tokens.
    """
    h, w = grid
    if x.shape[-2] != h * w:
        raise ValueError(f"{x.shape[-2]} tokens do not form a {h}x{w} grid")
    group = x.shape[-1] // 16
    *groups, stay = x.unflatten(-2, (h, w)).split([group] * 8 + [x.shape[-1] - 8 * group], dim=-1)
    moved = [read_neighbour(part, [(-3, d_row), (-2, d_col)])
             for part, (d_row, d_col) in zip(groups, NEIGHBOUR_OFFSETS, strict=True)]
    return torch.cat([*moved, stay], dim=-1).flatten(-3, -2)


class ConvMlp(nn.Module):
    """fc1 -> depthwise conv on each frame's token grid -> activation -> fc2.

    The depthwise conv (PVTv2-style) gives the feed-forward block local spatial context,
    which a model without a spatial position embedding (LVT) relies on to know where a
    patch is relative to its neighbours.
    """

    def __init__(self, *, dim: int, hidden: int, act: str = "gelu", dropout: float = 0.0, kernel: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: (..., S, C) with S = h * w tokens of one frame per leading index."""
        hidden = self.fc1(x)
        lead = hidden.shape[:-2]
        maps = rearrange(hidden.flatten(0, -3), "n (h w) c -> n c h w", h=grid[0], w=grid[1])
        hidden = rearrange(self.dwconv(maps), "n c h w -> n (h w) c").unflatten(0, lead)
        return self.drop(self.fc2(self.drop(self.act(hidden))))


# Layers whose products are with weights. Weight decay applies to their weights only
# (train.loop.parameter_groups), and the FLOP counter (bench.flops) counts every other
# product as attention's token mixing: activations multiplied with activations.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
