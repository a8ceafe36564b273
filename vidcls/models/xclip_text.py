"""X-CLIP's text side: CLIP's text encoder, the video-specific prompt generator, and the classifier
built from text (the `head` of the xclip family).

- `TextEncoder`: CLIP's causal text transformer. Token ids (K, L) -> one vector per prompt (K, P):
  the final-normed state at the end-of-text token (CLIP's vocabulary gives that token the highest
  id, so it is the argmax of each row), through the text projection.
- `PromptGenerator`: the paper's video-specific prompting (Ni et al., ECCV 2022, sec. 3.3). Each
  label's text vector attends to the video's patch features (averaged over the frames) in a few
  cross-attention layers, and the result, scaled by a learned per-channel alpha, is added to the
  text vector: the label embeddings are conditioned on the video they are compared with.
- `TextClassifier`: holds the encoded label set (a buffer, not in the state dict: it is derived from
  the text encoder and the label names) and turns (video embedding, patch features) into logits,
  exp(logit_scale) times the cosine of the video and each video-conditioned label vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidcls.models.layers import Attention, Block, Mlp, folded_sdpa


class CausalAttention(Attention):
    """Self-attention in which token i sees tokens 0..i only (the text encoder reads left to right)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(out, "... h n d -> ... n (h d)")))


class TextEncoder(nn.Module):
    """CLIP's text transformer (pre-LayerNorm blocks, causal attention, learned positions).

    Padding after the end-of-text token needs no mask: with causal attention no earlier token
    sees it, and the output is read at the end-of-text token.
    """

    def __init__(self, *, vocab_size: int, context_length: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, act: str, eps: float, out_dim: int) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(context_length, dim))
        self.blocks = nn.ModuleList(
            Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, act=act, eps=eps,
                  attn=CausalAttention(dim=dim, num_heads=num_heads))
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, out_dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (K, L), each row <start> ... <end> [padding] -> (K, out_dim)."""
        if ids.shape[-1] > self.context_length:
            raise ValueError(f"{ids.shape[-1]} tokens; the text encoder reads at most {self.context_length}")
        x = self.token_embed(ids) + self.pos_embed[: ids.shape[-1]]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        end = ids.argmax(dim=-1)  # the end-of-text token has the highest id of CLIP's vocabulary
        return self.proj(x[torch.arange(x.shape[0], device=x.device), end])


class CrossAttention(nn.Module):
    """Queries from one sequence, keys and values from another (bias-free projections, biased output)."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """queries (B, K, C), context (B, S, C) -> (B, K, C)."""
        q, k, v = (rearrange(layer(x), "b n (h d) -> b h n d", h=self.num_heads)
                   for layer, x in ((self.q, queries), (self.k, context), (self.v, context)))
        return self.proj(rearrange(folded_sdpa(q, k, v), "b h n d -> b n (h d)"))


class PromptLayer(nn.Module):
    """text + cross_attn(LN(text), visual), then + MLP(LN(text))."""

    def __init__(self, *, dim: int, num_heads: int, act: str, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = CrossAttention(dim=dim, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden=4 * dim, act=act)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm2(text))


class PromptGenerator(nn.Module):
    """The video-specific prompt: a per-label correction of the text vectors from the video's patches."""

    def __init__(self, *, dim: int, depth: int, num_heads: int, alpha: float, act: str, text_eps: float,
                 visual_eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=visual_eps)
        self.layers = nn.ModuleList(PromptLayer(dim=dim, num_heads=num_heads, act=act, eps=text_eps)
                                    for _ in range(depth))
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text (B, K, C), visual (B, S, C) -> the correction (B, K, C) to add to text."""
        visual = self.norm(visual)
        for layer in self.layers:
            text = layer(text, visual)
        return self.alpha * text


class TextClassifier(nn.Module):
    """The classifier of a model whose classes are text: cosine of the video and each label vector.

    `label_embeds` (K, P) are the encoded prompts of the current label set (TextEncoder's output),
    set by the model's `set_labels`; before any label set they are random, as a fresh nn.Linear's
    weights are. in_features / out_features read like an nn.Linear's.
    """

    def __init__(self, *, dim: int, num_classes: int, prompt_depth: int, prompt_heads: int, prompt_alpha: float,
                 act: str, text_eps: float, visual_eps: float, logit_scale: float) -> None:
        super().__init__()
        self.prompts = PromptGenerator(dim=dim, depth=prompt_depth, num_heads=prompt_heads, alpha=prompt_alpha,
                                       act=act, text_eps=text_eps, visual_eps=visual_eps)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.register_buffer("label_embeds", torch.randn(num_classes, dim) * 0.02, persistent=False)

    @property
    def in_features(self) -> int:
        return self.label_embeds.shape[1]

    @property
    def out_features(self) -> int:
        return self.label_embeds.shape[0]

    def set_embeds(self, embeds: torch.Tensor) -> None:
        """Replace the label set: (K, P) encoded prompts, kept at this module's device and dtype."""
        self.label_embeds = embeds.to(self.logit_scale.device, self.logit_scale.dtype)

    def forward(self, video: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """video (B, P) embeddings, visual (B, S, P) patch features -> logits (B, K).

        Without `visual` the label vectors are not conditioned on the video (CLIP's plain
        zero-shot logits); X-CLIP's own logits condition them.
        """
        text = self.label_embeds.to(video.dtype).expand(video.shape[0], -1, -1)
        if visual is not None:
            text = text + self.prompts(text, visual)
        scores = torch.einsum("bp,bkp->bk", F.normalize(video, dim=-1), F.normalize(text, dim=-1))
        return self.logit_scale.exp() * scores
