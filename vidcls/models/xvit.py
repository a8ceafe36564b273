"""X-ViT: space-time mixing attention, a video ViT at the cost of an image ViT, O(T S^2).

Every frame is its own (S+1)-token sequence with its own class token, and attention stays
inside the frame. Time enters through the keys and values: in every layer the K and V of
frame t are rebuilt from channel slices of frames t+1, t and t-1 at the same spatial
position (a temporal channel shift, zero at the clip ends, class tokens shifted too), so
each query of frame t sees its neighbours at no extra multiply-add. A Temporal Attention
(TA) head, one transformer layer over the T per-frame class tokens plus a learnable token,
turns the frames into a clip prediction.

From the authors' code (1adrianb/video-transformers; read, not copied), which the
`num_segments` and `head_layer_norm_eps` options reproduce:
- slowfast/models/temporal_shift.py (TemporalShift, make_temporal_shift): the shift is
  applied to K and V only, after the qkv projection, to every token (class token included),
  with fold = C // shift_div counted over all heads (head-major channels); the frames of a
  batch are cut into consecutive groups of XVIT.NUM_SEGMENTS and the shift never crosses a
  group: channels [0, fold) of the last frame of a group and [fold, 2 fold) of its first
  are zero, with no wrap-round. configs/Kinetics/xvit_B16_16x16_k600.yaml mixes a 16-frame
  clip in two groups of 8 (NUM_SEGMENTS: 8, SHIFT_DIV: 8), configs/SSv2/xvit_B16_16x16.yaml
  in one group of 16 (NUM_SEGMENTS: 16, SHIFT_DIV: 4); LOCATIONS_LIST covers every block.
- slowfast/models/transformers/vit.py: temp_embed is (1, num_frames, 1, C) with num_frames
  = DATA.NUM_FRAMES (16 in both configs, passed by video_model_builder.py), added after the
  position table by viewing the frames as rows of num_frames; so a shorter table would
  repeat over consecutive groups of its length (vidcls.convert.xvit.fit_state does that to
  such a checkpoint). The final LayerNorm is applied and each frame's class token read
  (`self.norm(x)[:, 0]`); the image head is a Dropout.
- slowfast/models/head_helper.py (VitHead) and video_model_builder.py: with CONSENSUS_TYPE
  "vit" the head takes the class tokens of all T frames of the clip at once (no per-group
  pooling): a learnable token is prepended, one Block (qkv without bias, torch's default
  LayerNorm eps 1e-5) runs, and the token's output goes through LayerNorm (eps 1e-5),
  Linear, GELU, Dropout, Linear. Their "avg" consensus instead averages per-frame logits over
  groups of NUM_SEGMENTS frames, one output per group; our "mean" head averages over the
  whole clip, which is the same when the clip is one group.

Choices not fixed by the paper or that code, each a config option:
- (unconfirmed) summary tokens (`summary_tokens`): a frame's summary is the mean of its
  patch tokens' (unshifted) keys and values, class token excluded; equal to projecting the
  mean of the layer-normed patch tokens, because the projection is linear.

Parameter names follow timm's ViT (patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm) plus time_embed and head.*.
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
    TubeletEmbed,
    activation,
    drop_path_rates,
    resize_cls_grid_embedding,
    resize_grid_embedding,
    temporal_channel_shift,
)
from vidcls.models.validate import Bounds, Choices

HEADS = ("ta", "mean")


@dataclass
class XViTConfig(ViTConfig):
    """Hyper-parameters of X-ViT (defaults: ViT-B/16, 8 frames x 224, Kinetics shift_div 8, TA head)."""

    shift_div: int = 8  # C // shift_div channels come from each neighbour; 0 turns mixing off
    num_segments: int = 0  # frames per mixing group (their XVIT.NUM_SEGMENTS); 0: the whole clip is one group
    summary_tokens: bool = False  # (unconfirmed) see the module docstring
    head: str = "ta"  # "ta": Temporal Attention head; "mean": temporal mean of the class tokens
    head_hidden: int = 768
    head_dropout: float = 0.5
    head_layer_norm_eps: float | None = None  # the TA head's LayerNorms; None: layer_norm_eps (theirs: 1e-5)

    limits: ClassVar[Bounds] = {**ViTConfig.limits, "shift_div": (0, 65536), "num_segments": (0, 1024),
                                "head_hidden": (1, 1 << 20), "head_layer_norm_eps": (1e-30, 1.0)}
    choices: ClassVar[Choices] = {**ViTConfig.choices, "head": HEADS}


class SpaceTimeMixingAttention(Attention):
    """Attention inside each frame whose keys and values are mixed with the neighbouring frames.

    Input (B, T, N, C): token 0 of every frame is that frame's class token. Same parameters
    as `Attention`; only K and V change between projection and attention, so an image
    ViT's weights drop straight in.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, proj_drop: float, shift_div: int,
                 summary_tokens: bool, num_segments: int = 0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop)
        self.shift_div = shift_div
        self.summary_tokens = summary_tokens
        self.num_segments = num_segments

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head keys or values (B, T, H, N, d) -> the same with channels from frames t+1 and t-1.

        The channel slices are counted over the full width C across heads, as in the paper
        and the authors' code; frames mix only within their group of `num_segments`.
        """
        if not self.shift_div:
            return x
        heads = x.shape[2]
        shifted = mix_within_groups(rearrange(x, "b t h n d -> b t n (h d)"), self.shift_div, self.num_segments)
        return rearrange(shifted, "b t n (h d) -> b t h n d", h=heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads_qkv(x)  # (B, T, H, N, d)
        mixed_k, mixed_v = self.mix(k), self.mix(v)
        if self.summary_tokens:
            mixed_k, mixed_v = append_summaries(mixed_k, k), append_summaries(mixed_v, v)
        return self.attend(q, mixed_k, mixed_v)


def mix_within_groups(x: torch.Tensor, shift_div: int, group: int) -> torch.Tensor:
    """(B, T, N, C) -> the temporal channel shift applied within consecutive groups of `group` frames.

    group = 0 (or T) shifts over the whole clip. The authors' K600 model was trained mixing
    16-frame clips as two 8-frame groups, so frames 7 and 8 never exchange channels: each
    group's edge frames read zeros where a neighbour would lie outside the group.
    """
    frames = x.shape[1]
    group = group or frames
    if frames % group:
        raise ValueError(f"a clip of {frames} frames is not a whole number of {group}-frame mixing groups "
                         f"(arch.num_segments = {group})")
    grouped = x.unflatten(1, (frames // group, group))
    return temporal_channel_shift(grouped, shift_div, dim=2).flatten(1, 2)


def append_summaries(mixed: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """Append every frame's summary (mean over its patch tokens) to the keys or values of every frame.

    mixed, plain: (B, T, H, N, d) -> (B, T, H, N + T, d); each frame's attention then also
    reads a one-token digest of every frame of the clip, at O(T) extra keys per frame.
    """
    summaries = rearrange(plain[..., 1:, :].mean(dim=-2), "b t h d -> b h t d")
    return torch.cat([mixed, summaries[:, None].expand(-1, mixed.shape[1], -1, -1, -1)], dim=-2)


class TemporalAttentionHead(nn.Module):
    """X-ViT's TA head: a learnable token attends with the T frame class tokens through one layer.

    forward takes the token's output through LayerNorm, Linear and GELU: the clip feature that
    the model's head dropout and then the classifier `fc2` read. fc2 belongs to this module
    so that the head's parameters keep the authors' grouping (head.fc2.*), but the model
    applies it (VideoClassifier.forward_head), after its dropout.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, act: str, eps: float,
                 hidden: int, num_classes: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, act=act, eps=eps)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation("gelu")
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, C) per-frame class tokens -> the clip feature (B, hidden) that fc2 classifies."""
        token = self.token.to(frame_tokens.dtype).expand(frame_tokens.shape[0], -1, -1)
        clip = self.block(torch.cat([token, frame_tokens], dim=1))[:, 0]
        return self.act(self.fc1(self.norm(clip)))


@register("xvit")
class XViT(VideoClassifier):
    """Video ViT with space-time mixing attention and a Temporal Attention head (X-ViT)."""

    Config = XViTConfig

    def __init__(self, config: XViTConfig) -> None:
        super().__init__(config)
        c = config
        if c.shift_div and not 2 <= c.shift_div <= c.embed_dim:
            raise ValueError(f"shift_div must be 0 (no mixing) or 2..{c.embed_dim}, got {c.shift_div}")
        if c.num_segments and c.num_frames % c.num_segments:
            raise ValueError(f"num_frames {c.num_frames} is not a whole number of num_segments {c.num_segments} "
                             f"(frames per mixing group)")
        self.patch_embed = TubeletEmbed(in_chans=c.in_chans, dim=c.embed_dim, patch=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (c.img_size // c.patch_size) ** 2, c.embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, c.num_frames, 1, c.embed_dim))
        self.embed_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(**c.block_options(), drop_path=rate,
                  attn=SpaceTimeMixingAttention(dim=c.embed_dim, num_heads=c.num_heads, qkv_bias=c.qkv_bias,
                                                proj_drop=c.dropout, shift_div=c.shift_div,
                                                summary_tokens=c.summary_tokens, num_segments=c.num_segments))
            for rate in drop_path_rates(c.drop_path, c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        if c.head == "ta":
            head_eps = c.layer_norm_eps if c.head_layer_norm_eps is None else c.head_layer_norm_eps
            self.head = TemporalAttentionHead(dim=c.embed_dim, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                                              qkv_bias=c.qkv_bias, act=c.mlp_activation, eps=head_eps,
                                              hidden=c.head_hidden, num_classes=c.num_classes)
        else:
            self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.init_weights()

    @property
    def classifier_name(self) -> str:
        return "head.fc2" if self.config.head == "ta" else "head"

    def init_tables(self) -> list[nn.Parameter]:
        # time_embed stays zero: at the start the model is the image ViT it is initialised from.
        return [self.cls_token, self.pos_embed] + ([self.head.token] if self.config.head == "ta" else [])

    def fan_in_layers(self) -> list[nn.Module]:
        return [self.head.fc1, self.head.fc2] if self.config.head == "ta" else []

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> per-frame sequences (B, T, S+1, C) with class tokens and embeddings."""
        c = self.config
        patches = self.patch_embed(video)  # (B, T, S, C)
        batch, frames = patches.shape[:2]
        size, grid = c.img_size // c.patch_size, (video.shape[3] // c.patch_size, video.shape[4] // c.patch_size)
        cls = self.cls_token.to(patches.dtype)[:, None].expand(batch, frames, -1, -1)
        pos = resize_cls_grid_embedding(self.pos_embed, (size, size), grid, "xvit").to(patches.dtype)
        time = resize_grid_embedding(self.time_embed.flatten(1, 2), (c.num_frames,), (frames,), "xvit")
        tokens = torch.cat([cls, patches], dim=2) + pos[:, None] + time[:, :, None].to(patches.dtype)
        return self.embed_drop(tokens)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised video -> final-normed per-frame sequences (B, T, S+1, C),
        each frame's class token first."""
        tokens = self.embed(video)
        for block in self.blocks:
            tokens = self.run_block(block, tokens)
        return self.norm(tokens)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The per-frame class tokens through the TA head, or their temporal mean."""
        frame_tokens = features[:, :, 0]
        return self.head(frame_tokens) if self.config.head == "ta" else frame_tokens.mean(dim=1)
