"""Shared by the zoo / Hub / convert / train tests: tiny transformers and timm models, an offline Hub cache.

The cache is laid out as huggingface_hub lays it out (models--OWNER--REPO/{blobs, snapshots/
COMMIT, refs/REVISION}, blobs named by their sha256 like LFS files), so vidcls reads it through
the real hf_hub_download with HF_HUB_OFFLINE=1 and no network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

TINY = dict(image_size=32, num_frames=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128)


def tiny_transformers_model(kind: str, labels: list[str] | None = None, seed: int = 0, **overrides):
    """A small randomly initialised TimeSformer / VideoMAE / ViViT classifier from `transformers`.

    Every parameter is redrawn (biases and norms too, which the default init leaves at 0 / 1),
    so a key mapped to the wrong place cannot hide behind a zero.
    """
    import transformers as tf

    labels = labels or ["a", "b", "c", "d", "e"]
    options = dict(TINY, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if kind == "timesformer":
        config, cls = tf.TimesformerConfig(patch_size=8, **options | overrides), tf.TimesformerForVideoClassification
    elif kind == "videomae":
        config, cls = tf.VideoMAEConfig(patch_size=8, tubelet_size=2, **options | overrides), \
            tf.VideoMAEForVideoClassification
    else:
        config, cls = tf.VivitConfig(tubelet_size=[2, 8, 8], **options | overrides), tf.VivitForVideoClassification
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            param.copy_(offset + 0.2 * torch.randn_like(param))
    return model


def save_transformers(model, directory: Path, preprocessor: dict | None = None) -> Path:
    """save_pretrained (safetensors) plus, optionally, a preprocessor_config.json."""
    model.save_pretrained(directory)
    if preprocessor is not None:
        (Path(directory) / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return Path(directory)


def add_to_hub_cache(cache: Path, repo: str, source: Path, revision: str = "main",
                     commit: str | None = None) -> Path:
    """Put every file of `source` into the Hub cache as repo@revision; returns the snapshot dir."""
    commit = commit or hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for path in sorted(Path(source).iterdir()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    ref_file = root / "refs" / revision
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    ref_file.write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty offline Hub cache and lock-file home inside tmp_path (the real ones untouched).

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE once at import, so its constants
    are patched too; the environment variables are set for subprocesses.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "vidcls"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def flip_byte(path: Path, offset: int = -100) -> None:
    """Corrupt a file in place, as a bad disk or an interrupted copy would."""
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def timm_vit_state(seed: int = 0, side: int = 4, width: int = 32, depth: int = 2, patch: int = 8
                   ) -> dict[str, torch.Tensor]:
    """A random image ViT in timm's layout (side x side patches), with a 21k-class head that must not be used."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    state = {"patch_embed.proj.weight": rand(width, 3, patch, patch), "patch_embed.proj.bias": rand(width),
             "cls_token": rand(1, 1, width), "pos_embed": rand(1, 1 + side * side, width),
             "norm.weight": rand(width, offset=1.0), "norm.bias": rand(width),
             "head.weight": rand(21843, width), "head.bias": rand(21843)}
    for i in range(depth):
        state |= {f"blocks.{i}.norm1.weight": rand(width, offset=1.0), f"blocks.{i}.norm1.bias": rand(width),
                  f"blocks.{i}.attn.qkv.weight": rand(3 * width, width), f"blocks.{i}.attn.qkv.bias": rand(3 * width),
                  f"blocks.{i}.attn.proj.weight": rand(width, width), f"blocks.{i}.attn.proj.bias": rand(width),
                  f"blocks.{i}.norm2.weight": rand(width, offset=1.0), f"blocks.{i}.norm2.bias": rand(width),
                  f"blocks.{i}.mlp.fc1.weight": rand(4 * width, width), f"blocks.{i}.mlp.fc1.bias": rand(4 * width),
                  f"blocks.{i}.mlp.fc2.weight": rand(width, 4 * width), f"blocks.{i}.mlp.fc2.bias": rand(width)}
    return state
