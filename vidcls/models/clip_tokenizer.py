"""CLIP's byte-level BPE tokenizer through the `tokenizers` package (no `transformers` at run time).

A checkpoint's `tokenizer.json` describes the whole pipeline (normalisation, pre-tokenisation, the
BPE model, the start/end tokens) and is read as it is. A repository with only `vocab.json` and
`merges.txt` gets CLIP's pipeline built here: NFC, runs of whitespace to one space, lower case;
split into words, numbers (one digit each) and punctuation runs, and the English contractions;
bytes mapped to printable characters; BPE with `</w>` closing each word; `<|startoftext|>` before
and `<|endoftext|>` after. Every text is cut to the text encoder's context (77 tokens), its end
token kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from vidcls.errors import UsageError, VidclsError, first_line

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILES = (TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE)
START, END = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenisation: contractions, letter runs, single digits, runs of other non-space characters
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""


def has_tokenizer(directory: Path) -> bool:
    directory = Path(directory)
    return (directory / TOKENIZER_FILE).is_file() or all((directory / n).is_file() for n in (VOCAB_FILE, MERGES_FILE))


def _from_vocab(directory: Path):
    """CLIP's tokenizer pipeline around a vocab.json + merges.txt pair."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
    lines = (directory / MERGES_FILE).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    for special in (START, END):
        if special not in vocab:
            raise VidclsError(f"{directory / VOCAB_FILE}: no {special} token (not a CLIP vocabulary)")
    unknown = END  # CLIP's vocabulary has no unknown token of its own; byte-level BPE never needs one
    tokenizer = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>", unk_token=unknown, fuse_unk=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_WORDS), behavior="removed", invert=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, vocab[START]), (END, vocab[END])])
    tokenizer.add_special_tokens([START, END])
    return tokenizer


class ClipTokenizer:
    """Texts -> token ids (K, L) for the text encoder, padded after each text's end token."""

    def __init__(self, backend, context_length: int = 77) -> None:
        self.backend = backend
        self.context_length = context_length
        backend.no_padding()
        backend.enable_truncation(context_length)

    @classmethod
    def from_directory(cls, directory: Path, context_length: int = 77) -> ClipTokenizer:
        """tokenizer.json of a checkpoint directory, else its vocab.json + merges.txt."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        try:
            if (directory / TOKENIZER_FILE).is_file():
                backend = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            elif has_tokenizer(directory):
                backend = _from_vocab(directory)
            else:
                raise VidclsError(f"{directory}: no {TOKENIZER_FILE} (or {VOCAB_FILE} + {MERGES_FILE}): the text "
                                  f"side cannot read label names")
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for a bad file
            if isinstance(exc, VidclsError):
                raise
            raise VidclsError(f"{directory}: cannot read the tokenizer ({first_line(exc)})") from None
        return cls(backend, context_length)

    def __deepcopy__(self, memo: dict) -> ClipTokenizer:
        return self  # immutable once built; a model's cast copy shares it

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            raise UsageError("no label names to encode")
        rows = [encoding.ids for encoding in self.backend.encode_batch(list(texts))]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [0] * (width - len(row)) for row in rows], dtype=torch.long)
