"""X-CLIP (Ni et al., "Expanding Language-Image Pretrained Models for General Video Recognition",
ECCV 2022): a video classifier whose classes are text, so any list of names is a label set.

The video side is CLIP's image ViT run on every frame, with cross-frame communication: in each
block, every frame's class token is projected to a message token, the T message tokens of a clip
attend to each other, and each frame's tokens then attend to their own patches plus their frame's
message (which is dropped again before the MLP). The frames' final class tokens, normed and
projected to the joint space, go through the multi-frame integration transformer (MIT: a learned
time table, pre-LN blocks, a residual around them, the mean over time): that is the video
embedding. The text side (vidcls.models.xclip_text) encodes each label's prompt once; the
classifier conditions each label vector on the clip's patch features (video-specific prompting)
and scores the cosine with the video embedding.

The interface is vidcls's: input (B, C, T, H, W); `forward_features` gives (B, 1 + S, P), the video
embedding then the S patch features the prompts read (averaged over the frames), all in the joint
space of width P; `forward_head(..., pre_logits=True)` is the video embedding. The classifier is
built from text: `set_labels(names)` is this family's counterpart of `reset_classifier`. Any frame
count runs (the MIT's time table is interpolated, with a warning), as does any size that is a
multiple of the patch (the patch table likewise).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import nn

from vidcls.errors import UsageError
from vidcls.models import register
from vidcls.models.base import VideoClassifier, ViTConfig
from vidcls.models.layers import (
    Attention,
    Block,
    DropPath,
    Mlp,
    drop_path_rates,
    resize_cls_grid_embedding,
    resize_grid_embedding,
)
from vidcls.models.validate import Bounds, ConfigError
from vidcls.models.xclip_text import TextClassifier, TextEncoder

ENCODED_SETS = 64  # label sets whose text vectors are kept (set_labels back to one of them: no text pass)
DEFAULT_PROMPT = "{}"  # X-CLIP was trained on the bare class names; the prompt generator adds the context


@dataclass
class XClipConfig(ViTConfig):
    """Hyper-parameters of X-CLIP (defaults: ViT-B/32, 8 frames x 224, CLIP's text encoder, 400 labels).

    num_classes is the size of the current label set. mlp_activation and layer_norm_eps hold for
    every part (CLIP's quick GELU, 1e-5), as in every published checkpoint.
    """

    patch_size: int = 32
    layer_norm_eps: float = 1e-5
    mlp_activation: str = "quick_gelu"
    projection_dim: int = 512  # the joint space of video and text (also the MIT's width)
    mit_depth: int = 1
    mit_heads: int = 8
    mit_mlp_ratio: float = 4.0
    text_dim: int = 512
    text_depth: int = 12
    text_heads: int = 8
    text_mlp_ratio: float = 4.0
    vocab_size: int = 49408
    context_length: int = 77
    prompt_depth: int = 2
    prompt_heads: int = 8
    prompt_alpha: float = 0.1
    logit_scale: float = 2.6592  # log(1 / 0.07), CLIP's initial temperature; checkpoints carry theirs

    limits: ClassVar[Bounds] = {
        **ViTConfig.limits, "projection_dim": (1, 65536), "mit_depth": (1, 64), "mit_heads": (1, 1024),
        "mit_mlp_ratio": (0.01, 64.0), "text_dim": (1, 65536), "text_depth": (1, 256), "text_heads": (1, 1024),
        "text_mlp_ratio": (0.01, 64.0), "vocab_size": (1, 10_000_000), "context_length": (1, 65536),
        "prompt_depth": (0, 64), "prompt_heads": (1, 1024), "prompt_alpha": (-1e3, 1e3), "logit_scale": (-100.0, 100.0)}

    def __post_init__(self) -> None:
        super().__post_init__()
        for whole, part in (("projection_dim", "mit_heads"), ("projection_dim", "prompt_heads"),
                            ("text_dim", "text_heads")):
            if getattr(self, whole) % getattr(self, part):
                raise ConfigError(f"arch.{whole} = {getattr(self, whole)} is not divisible by "
                                  f"arch.{part} = {getattr(self, part)}")


class CrossFrameBlock(nn.Module):
    """A CLIP ViT block with cross-frame communication through one message token per frame."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, act: str, eps: float, drop_path: float,
                 dropout: float) -> None:
        super().__init__()
        self.message_fc = nn.Linear(dim, dim)
        self.message_norm = nn.LayerNorm(dim, eps=eps)
        self.message_attn = Attention(dim=dim, num_heads=num_heads, proj_drop=dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim=dim, num_heads=num_heads, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), act=act, dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, 1 + S, C), the frames of each clip consecutive."""
        tokens = x.shape[1]
        message = rearrange(self.message_fc(x[:, 0]), "(b t) c -> b t c", t=frames)
        message = message + self.drop_path(self.message_attn(self.message_norm(message)))
        x = torch.cat([x, rearrange(message, "b t c -> (b t) 1 c")], dim=1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x[:, :tokens]
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FrameIntegration(nn.Module):
    """The multi-frame integration transformer: frame embeddings (B, T, P) -> video embedding (B, P)."""

    def __init__(self, *, frames: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, act: str,
                 eps: float) -> None:
        super().__init__()
        self.frames = frames
        self.time_embed = nn.Parameter(torch.zeros(1, frames, dim))
        self.blocks = nn.ModuleList(Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, act=act, eps=eps)
                                    for _ in range(depth))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        table = resize_grid_embedding(self.time_embed, (self.frames,), (frames.shape[1],), "xclip")
        x = frames + table.to(frames.dtype)
        for block in self.blocks:
            x = block(x)
        return (x + frames).mean(dim=1)


@register("xclip")
class XClip(VideoClassifier):
    """X-CLIP: video (B, C, T, H, W) -> logits over the current label set (see the module docstring)."""

    Config = XClipConfig

    def __init__(self, config: XClipConfig) -> None:
        super().__init__(config)
        c = config
        if c.embed_dim % c.num_heads:
            raise ValueError(f"width {c.embed_dim} is not divisible by {c.num_heads} heads")
        eps, act = c.layer_norm_eps, c.mlp_activation
        self.patch_embed = nn.Conv3d(c.in_chans, c.embed_dim, kernel_size=(1, c.patch_size, c.patch_size),
                                     stride=(1, c.patch_size, c.patch_size), bias=False)
        self.cls_token = nn.Parameter(torch.zeros(c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (c.img_size // c.patch_size) ** 2, c.embed_dim))
        self.norm_pre = nn.LayerNorm(c.embed_dim, eps=eps)
        self.blocks = nn.ModuleList(
            CrossFrameBlock(dim=c.embed_dim, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, act=act, eps=eps,
                            drop_path=rate, dropout=c.dropout)
            for rate in drop_path_rates(c.drop_path, c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=eps)
        self.visual_proj = nn.Linear(c.embed_dim, c.projection_dim, bias=False)
        self.mit = FrameIntegration(frames=c.num_frames, dim=c.projection_dim, depth=c.mit_depth,
                                    num_heads=c.mit_heads, mlp_ratio=c.mit_mlp_ratio, act=act, eps=eps)
        self.prompt_norm = nn.LayerNorm(c.embed_dim, eps=eps)
        self.prompt_proj = nn.Parameter(torch.zeros(c.embed_dim, c.projection_dim))
        self.text = TextEncoder(vocab_size=c.vocab_size, context_length=c.context_length, dim=c.text_dim,
                                depth=c.text_depth, num_heads=c.text_heads, mlp_ratio=c.text_mlp_ratio, act=act,
                                eps=eps, out_dim=c.projection_dim)
        self.head = TextClassifier(dim=c.projection_dim, num_classes=c.num_classes, prompt_depth=c.prompt_depth,
                                   prompt_heads=c.prompt_heads, prompt_alpha=c.prompt_alpha, act=act, text_eps=eps,
                                   visual_eps=eps, logit_scale=c.logit_scale)
        self.tokenizer = None  # a ClipTokenizer, attached by whoever loads the checkpoint (vidcls.zoo)
        self.labels: list[str] | None = None
        self.prompt = DEFAULT_PROMPT
        self._pending: tuple[str, ...] | None = None  # prompts set but not encoded yet (encode=False)
        # prompts -> their (K, P) text vectors, on CPU; the last ENCODED_SETS label sets (a server's clients
        # may each send their own: the cache must not grow with them)
        self._encoded: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self.init_weights()
        with torch.no_grad():
            self.head.logit_scale.fill_(c.logit_scale)
            self.head.prompts.alpha.fill_(c.prompt_alpha)

    def init_tables(self) -> list[nn.Parameter]:
        return [self.pos_embed, self.cls_token, self.mit.time_embed, self.prompt_proj, self.text.pos_embed]

    @property
    def num_features(self) -> int:
        return self.config.projection_dim

    # ------------------------------------------------------------ video side

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.config.patch_size, width // self.config.patch_size

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, 1 + S, P): the video embedding, then the patch features of the prompts."""
        batch, _, frames, height, width = video.shape
        c = self.config
        if height % c.patch_size or width % c.patch_size:
            raise ValueError(f"input {height}x{width} is not divisible by patch {c.patch_size}")
        x = rearrange(self.patch_embed(video), "b c t h w -> (b t) (h w) c")
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        table = resize_cls_grid_embedding(self.pos_embed, self._grid(c.img_size, c.img_size),
                                          self._grid(height, width), "xclip")
        x = self.norm_pre(x + table.to(x.dtype))
        for block in self.blocks:
            x = self.run_block(block, x, frames)
        frame_embeds = rearrange(self.visual_proj(self.norm(x[:, 0])), "(b t) p -> b t p", b=batch)
        patches = self.prompt_norm(x[:, 1:]) @ self.prompt_proj.to(x.dtype)
        patches = rearrange(patches, "(b t) s p -> b t s p", b=batch).mean(dim=1)
        return torch.cat([self.mit(frame_embeds)[:, None], patches], dim=1)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        video = self.head_drop(self.pool(features))
        if pre_logits:
            return video
        self.encode_labels()
        return self.head(video, features[:, 1:])

    # ------------------------------------------------------------ text side: the label set

    def reset_classifier(self, num_classes: int) -> None:
        raise UsageError("X-CLIP's classifier is built from text: give it label names (set_labels, --labels) "
                         "instead of a class count")

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(K, P) text embeddings of `texts` as they are (no prompt), in the video embeddings' space."""
        if self.tokenizer is None:
            raise UsageError("this X-CLIP model has no tokenizer (its checkpoint's tokenizer.json, or vocab.json + "
                             "merges.txt): it cannot read label names")
        ids = self.tokenizer(list(texts)).to(self.text.token_embed.weight.device)
        with torch.no_grad():
            return self.text(ids)

    def prompts_for(self, names: Sequence[str], prompt: str | None = None) -> tuple[str, ...]:
        """The text each label is encoded as: `prompt` ("a video of {}"; default the checkpoint's bare
        name) with the name in place of {}, an underscore of a folder name read as a space."""
        template = self.prompt if prompt is None else prompt
        if "{}" not in template:
            raise UsageError(f"--prompt {template!r} has no {{}} where the label goes")
        return tuple(template.replace("{}", name.replace("_", " ")) for name in names)

    def set_labels(self, names: Sequence[str], prompt: str | None = None, encode: bool = True) -> None:
        """Make `names` the classes: logits[i] is the score of names[i].

        Each prompt set is encoded by the text encoder once and cached (switching back to a label
        set costs nothing); encode=False defers that to the first forward pass that needs it (a
        model loaded for its embeddings never runs its text side).
        """
        names = [str(name) for name in names]
        if not names or any(not name.strip() for name in names):
            raise UsageError("label names must be non-empty")
        if prompt is not None:
            self.prompts_for(["x"], prompt)  # a template without {} is refused now
            self.prompt = prompt
        self.labels, self._pending = names, self.prompts_for(names)
        self.config = dataclasses.replace(self.config, num_classes=len(names))
        if encode:
            self.encode_labels()

    def encode_labels(self) -> None:
        """Encode the label set now if set_labels deferred it (before tracing or timing a forward pass)."""
        if self._pending is None:
            return
        key, self._pending = self._pending, None
        if key not in self._encoded:
            self._encoded[key] = self.encode_text(key).float().cpu()
            while len(self._encoded) > ENCODED_SETS:
                self._encoded.popitem(last=False)
        self._encoded.move_to_end(key)
        self.head.set_embeds(self._encoded[key])

    def label_state(self) -> dict[str, Any]:
        """What the current classifier is (for a card): the names and the prompt."""
        return {"labels": self.labels, "prompt": self.prompt}
