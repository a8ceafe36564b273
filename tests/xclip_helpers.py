"""A tiny X-CLIP as transformers saves it (random weights) and a tiny CLIP BPE tokenizer, built here.

The tokenizer is a real byte-level BPE vocabulary of the CLIP kind: the 256 byte characters, each
also closing a word (`</w>`), merges that spell out a few words, then <|startoftext|> and
<|endoftext|> (the highest id, as in CLIP's vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["cooking", "playing", "guitar", "repairing", "a", "bike", "video", "of", "dancing", "ball"]


def byte_characters() -> list[str]:
    """The printable stand-in of each byte (the byte-level BPE convention): printable Latin-1 bytes
    stand for themselves, the others for the characters from U+0100 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_vocab(words: list[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    base = byte_characters()
    tokens = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        built = pieces[0]
        for piece in pieces[1:]:
            pair = (built, piece)
            built += piece
            if pair not in merges:
                merges.append(pair)
                if built not in tokens:
                    tokens.append(built)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_vocab(directory: Path) -> Path:
    """vocab.json + merges.txt of the tiny vocabulary in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                          encoding="utf-8")
    return directory


def reference_tokenizer(directory: Path):
    """transformers' CLIP tokenizer over the tiny vocabulary."""
    from transformers import CLIPTokenizer

    write_vocab(directory)
    vocab, merges = tiny_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_xclip_config(frames: int = 4, vocab_size: int | None = None, **top):
    import transformers as tf

    vocab_size = vocab_size or len(tiny_vocab()[0])
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  mit_hidden_size=24, mit_intermediate_size=48, mit_num_hidden_layers=1, mit_num_attention_heads=2,
                  image_size=32, patch_size=8, num_frames=frames)
    return tf.XCLIPConfig(text_config=text, vision_config=vision, **{
        "projection_dim": 24, "prompt_layers": 2, "prompt_num_attention_heads": 2, **top})


def randomise(model, seed: int = 0) -> None:
    """Every parameter drawn afresh (norms and biases too, the logit scale and alpha away from their
    initial values), so that a wrong mapping of any tensor shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                param.fill_(1.7)
            elif param.ndim == 1 and ("norm" in name or "layernorm" in name) and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def save_tiny_xclip(directory: Path, frames: int = 4, seed: int = 0, tokenizer_json: bool = True):
    """A tiny random XCLIPModel saved with save_pretrained, with its tokenizer and preprocessor config;
    returns (model, directory)."""
    from transformers import XCLIPModel

    torch.manual_seed(seed)
    model = XCLIPModel(tiny_xclip_config(frames)).eval()
    randomise(model, seed)
    model.save_pretrained(directory)
    vocab = directory.parent / f"{directory.name}-vocab"
    tokenizer = reference_tokenizer(vocab)
    if tokenizer_json:
        tokenizer.save_pretrained(directory)
    else:
        for name in ("vocab.json", "merges.txt"):
            (directory / name).write_bytes((vocab / name).read_bytes())
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 32}, "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return model, directory
