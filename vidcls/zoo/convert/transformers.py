"""The `transformers` layout of TimeSformer, VideoMAE and ViViT -> vidcls families.

Three things are translated, each by a pure function: the model config (config.json) into
a family and its arch, the preprocessor config into an InputSpec, and the state dict into
the family's parameter names. Nothing here imports `transformers`: a repository in this
format is read as plain JSON and safetensors.

Family mapping: TimeSformer -> divided; VideoMAE and ViViT -> joint (VideoMAE: tubelet
Conv3d, fixed sinusoidal table, q/v biases without a k bias, mean pooling + fc_norm; ViViT:
CLS token, learned positions, tanh-GELU).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vidcls.errors import VidclsError
from vidcls.zoo.convert.keys import compile_rules, rename_key
from vidcls.zoo.modeldir import InputSpec, ModelCard, labels_from_id2label

FAMILY_OF = {"timesformer": "divided", "videomae": "joint", "vivit": "joint"}
PREFIXES = tuple(f"{model_type}." for model_type in FAMILY_OF)

# transformers' activation names -> ours. gelu_fast / gelu_new / gelu_pytorch_tanh are all
# the tanh approximation of GELU (ViViT checkpoints use gelu_fast).
ACTIVATION = {"gelu": "gelu", "gelu_fast": "gelu_tanh", "gelu_new": "gelu_tanh",
              "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

# VideoMAE's fc_norm is built without an eps argument, so it has torch's default, while
# its blocks use config.layer_norm_eps (1e-12): a difference that shows in fp32 logits.
TORCH_LAYER_NORM_EPS = 1e-5


def is_transformers_config(config: dict[str, Any]) -> bool:
    return "model_type" in config and "family" not in config


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is in the transformers layout of one of the three families."""
    return any(key.startswith(PREFIXES) for key in state)


# ---------------------------------------------------------------- config.json


def _square(value: Any, what: str) -> int:
    """transformers allows (h, w) pairs; our families are square."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise VidclsError(f"non-square {what} {list(value)} is not supported")
        value = value[0]
    return int(value)


def _common_arch(config: dict[str, Any]) -> dict[str, Any]:
    hidden, intermediate = int(config["hidden_size"]), int(config["intermediate_size"])
    mlp_ratio = intermediate / hidden
    if int(hidden * mlp_ratio) != intermediate:
        raise VidclsError(f"MLP width {intermediate} is not expressible as a ratio of width {hidden}")
    activation = config.get("hidden_act", "gelu")
    if activation not in ACTIVATION:
        raise VidclsError(f"activation {activation!r} is not supported; known: {', '.join(ACTIVATION)}")
    num_classes = len(config["id2label"]) if "id2label" in config else int(config.get("num_labels", 2))
    return {"num_classes": num_classes, "img_size": _square(config["image_size"], "image size"),
            "in_chans": int(config.get("num_channels", 3)), "embed_dim": hidden,
            "depth": int(config["num_hidden_layers"]), "num_heads": int(config["num_attention_heads"]),
            "mlp_ratio": mlp_ratio, "mlp_activation": ACTIVATION[activation],
            "layer_norm_eps": float(config["layer_norm_eps"])}


def arch_from_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transformers config.json -> (vidcls family, arch); refuses variants we cannot match."""
    model_type = config.get("model_type")
    if model_type not in FAMILY_OF:
        raise VidclsError(f"transformers model type {model_type!r} is not supported; "
                          f"supported: {', '.join(FAMILY_OF)}")
    try:
        arch = _common_arch(config)
        if model_type == "timesformer":
            if config.get("attention_type", "divided_space_time") != "divided_space_time":
                raise VidclsError(f"TimeSformer attention_type {config['attention_type']!r} is not supported "
                                  f"(only divided_space_time)")
            arch |= {"num_frames": int(config["num_frames"]), "patch_size": _square(config["patch_size"], "patch"),
                     "qkv_bias": bool(config.get("qkv_bias", True))}
        elif model_type == "videomae":
            if not config.get("use_mean_pooling", True):
                raise VidclsError("VideoMAE with use_mean_pooling=false is not supported")
            arch |= {"num_frames": int(config["num_frames"]), "patch_size": _square(config["patch_size"], "patch"),
                     "tubelet_size": int(config.get("tubelet_size", 2)),
                     "qkv_bias": "qv" if config.get("qv_bias", config.get("qkv_bias", True)) else False,
                     "cls_token": False, "pos_embed": "sinusoidal", "pool": "mean",
                     "fc_norm_eps": TORCH_LAYER_NORM_EPS}
        else:  # vivit: tubelet_size is (t, h, w)
            tubelet = [int(v) for v in config.get("tubelet_size", (2, 16, 16))]
            arch |= {"num_frames": int(config["num_frames"]), "tubelet_size": tubelet[0],
                     "patch_size": _square(tubelet[1:], "tubelet patch"),
                     "qkv_bias": bool(config.get("qkv_bias", True)),
                     "cls_token": True, "pos_embed": "learned", "pool": "cls"}
    except KeyError as exc:
        raise VidclsError(f"{model_type} config.json lacks {exc}") from None
    return FAMILY_OF[model_type], arch


# ---------------------------------------------------------------- preprocessor_config.json


def _edge(value: Any) -> int | None:
    """An image-processor size entry (int, {"shortest_edge": n} or {"height", "width"}) -> one side."""
    if value is None:
        return None
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        return min(int(value["height"]), int(value["width"]))
    return int(value)


def input_from_preprocessor(pre: dict[str, Any]) -> dict[str, Any]:
    """mean, std, size and resize of an InputSpec from a transformers preprocessor config.

    The processor maps a pixel p in [0, 255] to (p * rescale_factor - offset - mean) / std;
    we feed x = p / 255 through (x - mean') / std', so mean' = (mean + offset) / (255 *
    rescale_factor) and std' = std / (255 * rescale_factor). That also covers ViViT's
    processor, which rescales to [-1, 1] (offset) before normalising.
    """
    scale = 255.0 * float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 255.0
    offset = 1.0 if pre.get("offset", False) and pre.get("do_rescale", True) else 0.0
    if pre.get("do_normalize", True):
        mean = [float(m) for m in pre.get("image_mean", (0.5, 0.5, 0.5))]
        std = [float(s) for s in pre.get("image_std", (0.5, 0.5, 0.5))]
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    resize = _edge(pre.get("size")) if pre.get("do_resize", True) else None
    crop = _edge(pre.get("crop_size")) if pre.get("do_center_crop", True) else None
    size = crop or resize
    spec: dict[str, Any] = {"mean": [(m + offset) / scale for m in mean], "std": [s / scale for s in std]}
    if size is not None:
        spec |= {"size": size, "resize": resize if resize and resize != size else None}
    return spec


def card_from_config(config: dict[str, Any], preprocessor: dict[str, Any] | None, name: str,
                     recipe: dict[str, Any] | None = None) -> ModelCard:
    """The ModelCard of a transformers-format repository.

    recipe: input options of the original training recipe (frames, stride, sampling,
    views) from models.yaml; without one, the config's frame count spread over the video.
    Mean, std and sizes come from the preprocessor config when there is one.
    """
    family, arch = arch_from_config(config)
    preprocessing = input_from_preprocessor(preprocessor) if preprocessor else {}
    spec = {"frames": arch["num_frames"], "sampling": "segment", "size": arch["img_size"]} | (recipe or {})
    spec |= preprocessing  # the repository's own preprocessing wins over models.yaml's copy
    labels = labels_from_id2label(config["id2label"]) if "id2label" in config else None
    return ModelCard(name=name, family=family, arch=arch, input=InputSpec.from_dict(spec), labels=labels)


# ---------------------------------------------------------------- state dict

# Whole-key renames, applied in order; the first rule that matches a key wins. Block
# entries name q / k / v separately where the source does; `_fuse_qkv` joins them.
_BLOCK = r"(?:encoder\.layer|layers)\.(\d+)\."
_RULES = compile_rules([
    (r"^(?:timesformer|videomae|vivit)\.embeddings\.cls_token$", "cls_token"),
    (r"^(?:timesformer|vivit)\.embeddings\.position_embeddings$", "pos_embed"),
    (r"^timesformer\.embeddings\.time_embeddings$", "time_embed"),
    (r"^\w+\.embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (rf"^\w+\.{_BLOCK}attention\.attention\.qkv\.", r"blocks.\1.attn.qkv."),
    (rf"^\w+\.{_BLOCK}attention\.attention\.(q|v)_bias$", r"blocks.\1.attn.\2_bias"),
    (rf"^\w+\.{_BLOCK}attention\.attention\.query\.", r"blocks.\1.attn.q."),
    (rf"^\w+\.{_BLOCK}attention\.attention\.key\.", r"blocks.\1.attn.k."),
    (rf"^\w+\.{_BLOCK}attention\.attention\.value\.", r"blocks.\1.attn.v."),
    (rf"^\w+\.{_BLOCK}attention\.([qkv])_proj\.", r"blocks.\1.attn.\2."),
    (rf"^\w+\.{_BLOCK}attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (rf"^\w+\.{_BLOCK}temporal_attention\.attention\.qkv\.", r"blocks.\1.temporal_attn.qkv."),
    (rf"^\w+\.{_BLOCK}temporal_attention\.output\.dense\.", r"blocks.\1.temporal_attn.proj."),
    (rf"^\w+\.{_BLOCK}temporal_dense\.", r"blocks.\1.temporal_fc."),
    (rf"^\w+\.{_BLOCK}temporal_layernorm\.", r"blocks.\1.temporal_norm."),
    (rf"^\w+\.{_BLOCK}layernorm_before\.", r"blocks.\1.norm1."),
    (rf"^\w+\.{_BLOCK}layernorm_after\.", r"blocks.\1.norm2."),
    (rf"^\w+\.{_BLOCK}(?:intermediate\.dense|mlp\.fc1)\.", r"blocks.\1.mlp.fc1."),
    (rf"^\w+\.{_BLOCK}(?:output\.dense|mlp\.fc2)\.", r"blocks.\1.mlp.fc2."),
    (r"^(?:timesformer|vivit)\.layernorm\.", "norm."),
    (r"^fc_norm\.", "fc_norm."),
    (r"^classifier\.", "head."),
])


def rename(key: str) -> str | None:
    """A transformers key -> ours (q / k / v still separate), or None for one we do not use."""
    return rename_key(key, _RULES)


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Join separate q, k, v projections into our fused qkv.

    VideoMAE has no key bias: its q and v biases become the attention's q_bias / v_bias.
    """
    fused = {k: v for k, v in state.items() if not re.search(r"\.attn\.[qkv]\.", k)}
    for prefix in sorted({k.rsplit(".attn.", 1)[0] for k in state if k.endswith(".attn.q.weight")}):
        part = {f"{p}.{kind}": state.get(f"{prefix}.attn.{p}.{kind}") for p in "qkv" for kind in ("weight", "bias")}
        fused[f"{prefix}.attn.qkv.weight"] = torch.cat([part["q.weight"], part["k.weight"], part["v.weight"]])
        if part["k.bias"] is not None:
            fused[f"{prefix}.attn.qkv.bias"] = torch.cat([part["q.bias"], part["k.bias"], part["v.bias"]])
        elif part["q.bias"] is not None:
            fused[f"{prefix}.attn.q_bias"], fused[f"{prefix}.attn.v_bias"] = part["q.bias"], part["v.bias"]
    return fused


def to_vidcls_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A transformers state dict -> (our state dict, source keys that have no place in ours).

    Unused keys are those of parts we do not build: ViViT's pooler, VideoMAE's
    pre-training decoder. TimeSformer's 2-D patch projection gains a time axis of 1.
    """
    renamed, unused = {}, []
    for key, tensor in state.items():
        new = rename(key)
        if new is None:
            unused.append(key)
        else:
            renamed[new] = tensor
    patch = renamed.get("patch_embed.proj.weight")
    if patch is not None and patch.ndim == 4:
        renamed["patch_embed.proj.weight"] = patch.unsqueeze(2)
    return _fuse_qkv(renamed), sorted(unused)
