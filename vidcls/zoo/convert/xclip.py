"""The `transformers` layout of X-CLIP (`XCLIPModel`, model_type "xclip") -> the xclip family.

As for the other transformers layouts (vidcls.zoo.convert.transformers), three pure translations:
config.json into the xclip arch, the preprocessor config into an InputSpec (the image processor's
mean, std and sizes), and the state dict into the family's names (q / k / v joined into one
projection, the 2-D patch convolution given a time axis of 1). Nothing imports `transformers`.

transformers writes a sub-config's values only where they differ from its defaults, so a missing
value is the default of `XCLIPConfig` / `XCLIPTextConfig` / `XCLIPVisionConfig`, listed here.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vidcls.errors import VidclsError
from vidcls.zoo.convert import transformers as hf_format
from vidcls.zoo.convert.keys import compile_rules, rename_state
from vidcls.zoo.modeldir import InputSpec, ModelCard

MODEL_TYPE = "xclip"
FAMILY = "xclip"
TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                 "layer_norm_eps": 1e-5}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "mit_hidden_size": 512, "mit_intermediate_size": 2048, "mit_num_hidden_layers": 1,
                   "mit_num_attention_heads": 8, "num_channels": 3, "image_size": 224, "patch_size": 32,
                   "num_frames": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
TOP_DEFAULTS = {"projection_dim": 512, "prompt_layers": 2, "prompt_alpha": 0.1, "prompt_hidden_act": "quick_gelu",
                "prompt_num_attention_heads": 8, "logit_scale_init_value": 2.6592}
# Keys that hold no weights: position-id buffers older checkpoints saved
_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def is_xclip_config(config: dict[str, Any]) -> bool:
    return config.get("model_type") == MODEL_TYPE and "family" not in config


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is an XCLIPModel's."""
    return "prompts_visual_projection" in state or any(k.startswith("prompts_generator.") for k in state)


# ---------------------------------------------------------------- config.json


def _sub(config: dict[str, Any], name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    given = config.get(name) or config.get(f"{name}_dict") or {}
    if not isinstance(given, dict):
        raise VidclsError(f"{name} must be an object")
    return {**defaults, **given}


def _ratio(inner: int, width: int, what: str) -> float:
    ratio = inner / width
    if int(width * ratio) != inner:
        raise VidclsError(f"{what} MLP width {inner} is not expressible as a ratio of width {width}")
    return ratio


def arch_from_config(config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """An XCLIPConfig as config.json holds it -> the xclip arch (num_classes: the default label set's size)."""
    text, vision = _sub(config, "text_config", TEXT_DEFAULTS), _sub(config, "vision_config", VISION_DEFAULTS)
    top = {**TOP_DEFAULTS, **config}
    activations = {text["hidden_act"], vision["hidden_act"], top["prompt_hidden_act"]}
    if activations != {"quick_gelu"}:
        raise VidclsError(f"X-CLIP with activations {sorted(activations)} is not supported (only quick_gelu)")
    if float(text["layer_norm_eps"]) != float(vision["layer_norm_eps"]):
        raise VidclsError("X-CLIP with different text and vision layer_norm_eps is not supported")
    projection = int(top["projection_dim"])
    if int(vision["mit_hidden_size"]) != projection:
        raise VidclsError(f"mit_hidden_size {vision['mit_hidden_size']} must equal projection_dim {projection}")
    width, text_width = int(vision["hidden_size"]), int(text["hidden_size"])
    return {
        "num_classes": num_classes, "num_frames": int(vision["num_frames"]),
        "img_size": hf_format._square(vision["image_size"], "image size"),
        "patch_size": hf_format._square(vision["patch_size"], "patch"), "in_chans": int(vision["num_channels"]),
        "embed_dim": width, "depth": int(vision["num_hidden_layers"]), "num_heads": int(vision["num_attention_heads"]),
        "mlp_ratio": _ratio(int(vision["intermediate_size"]), width, "vision"),
        "mlp_activation": "quick_gelu", "layer_norm_eps": float(vision["layer_norm_eps"]),
        "projection_dim": projection, "mit_depth": int(vision["mit_num_hidden_layers"]),
        "mit_heads": int(vision["mit_num_attention_heads"]),
        "mit_mlp_ratio": _ratio(int(vision["mit_intermediate_size"]), projection, "MIT"),
        "text_dim": text_width, "text_depth": int(text["num_hidden_layers"]),
        "text_heads": int(text["num_attention_heads"]),
        "text_mlp_ratio": _ratio(int(text["intermediate_size"]), text_width, "text"),
        "vocab_size": int(text["vocab_size"]), "context_length": int(text["max_position_embeddings"]),
        "prompt_depth": int(top["prompt_layers"]), "prompt_heads": int(top["prompt_num_attention_heads"]),
        "prompt_alpha": float(top["prompt_alpha"]), "logit_scale": float(top["logit_scale_init_value"]),
    }


def card_from_config(config: dict[str, Any], preprocessor: dict[str, Any] | None, name: str,
                     recipe: dict[str, Any] | None = None, labels: list[str] | None = None) -> ModelCard:
    """The ModelCard of an X-CLIP repository. labels: the default label set (a zoo entry's dataset);
    without one the card has none, and a run must be given its labels."""
    try:
        arch = arch_from_config(config, len(labels) if labels else 400)
    except (KeyError, TypeError, ValueError) as exc:
        raise VidclsError(f"xclip config.json: {exc}") from None
    preprocessing = hf_format.input_from_preprocessor(preprocessor) if preprocessor else {}
    # without a preprocessor config: ImageNet's mean and std, which the model cards name
    spec = {"frames": arch["num_frames"], "sampling": "segment", "size": arch["img_size"],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    spec |= (recipe or {}) | preprocessing  # the repository's own preprocessing wins over models.yaml's copy
    return ModelCard(name=name, family=FAMILY, arch=arch, input=InputSpec.from_dict(spec), labels=labels)


# ---------------------------------------------------------------- state dict

_LAYER = r"encoder\.layers\.(\d+)\."
_BLOCK_PARTS = [  # inside one encoder layer: transformers' name -> ours
    (r"self_attn\.([qkv])_proj\.", r"attn.\2."), (r"self_attn\.out_proj\.", "attn.proj."),
    (r"message_attn\.([qkv])_proj\.", r"message_attn.\2."), (r"message_attn\.out_proj\.", "message_attn.proj."),
    (r"message_fc\.", "message_fc."), (r"message_ln\.", "message_norm."),
    (r"layer_norm1\.", "norm1."), (r"layer_norm2\.", "norm2."), (r"mlp\.(fc[12])\.", r"mlp.\2."),
]
_RULES = compile_rules([
    (r"^text_model\.embeddings\.token_embedding\.weight$", "text.token_embed.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text.pos_embed"),
    (r"^text_model\.final_layer_norm\.", "text.norm."),
    (r"^text_projection\.weight$", "text.proj.weight"),
    (r"^vision_model\.embeddings\.class_embedding$", "cls_token"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "patch_embed.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "pos_embed"),
    (r"^vision_model\.pre_layernorm\.", "norm_pre."),
    (r"^vision_model\.post_layernorm\.", "norm."),
    (r"^visual_projection\.weight$", "visual_proj.weight"),
    (r"^logit_scale$", "head.logit_scale"),
    (r"^prompts_visual_layernorm\.", "prompt_norm."),
    (r"^prompts_visual_projection$", "prompt_proj"),
    (r"^mit\.position_embedding$", "mit.time_embed"),
    (r"^prompts_generator\.alpha$", "head.prompts.alpha"),
    (r"^prompts_generator\.layernorm\.", "head.prompts.norm."),
    (r"^prompts_generator\.decoder\.(\d+)\.cross_attn\.([qkv])_proj\.", r"head.prompts.layers.\1.cross_attn.\2."),
    (r"^prompts_generator\.decoder\.(\d+)\.cross_attn\.proj\.", r"head.prompts.layers.\1.cross_attn.proj."),
    (r"^prompts_generator\.decoder\.(\d+)\.norm1\.", r"head.prompts.layers.\1.norm1."),
    (r"^prompts_generator\.decoder\.(\d+)\.norm3\.", r"head.prompts.layers.\1.norm2."),
    (r"^prompts_generator\.decoder\.(\d+)\.mlp\.0\.", r"head.prompts.layers.\1.mlp.fc1."),
    (r"^prompts_generator\.decoder\.(\d+)\.mlp\.3\.", r"head.prompts.layers.\1.mlp.fc2."),
    *[(rf"^{source}\.{_LAYER}{part}", rf"{target}blocks.\1.{new}")
      for source, target in (("text_model", "text."), ("vision_model", ""), ("mit", "mit."))
      for part, new in _BLOCK_PARTS],
])


def _fuse(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Separate q, k, v projections of the self-attentions -> one fused qkv (the cross-attention keeps them)."""
    separate = re.compile(r"attn\.[qkv]\.(weight|bias)$")
    out = {k: v for k, v in state.items() if not (separate.search(k) and "cross_attn" not in k)}
    for prefix in sorted({k[: -len(".q.weight")] for k in state if k.endswith("attn.q.weight") and "cross" not in k}):
        for kind in ("weight", "bias"):
            out[f"{prefix}.qkv.{kind}"] = torch.cat([state[f"{prefix}.{p}.{kind}"] for p in "qkv"])
    return out


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An XCLIPModel state dict -> (the xclip family's, source keys without a place in it)."""
    renamed, unused = rename_state({k: v for k, v in state.items() if k not in _IGNORED}, _RULES)
    if renamed.get("patch_embed.weight") is not None and renamed["patch_embed.weight"].ndim == 4:
        renamed["patch_embed.weight"] = renamed["patch_embed.weight"].unsqueeze(2)
    if "pos_embed" in renamed and renamed["pos_embed"].ndim == 2:
        renamed["pos_embed"] = renamed["pos_embed"][None]
    return _fuse(renamed), unused
