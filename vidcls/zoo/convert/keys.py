"""Key renaming shared by the checkpoint layouts: ordered regex rules, the first match wins."""

from __future__ import annotations

import re

import torch

Rules = list[tuple[re.Pattern[str], str]]


def compile_rules(pairs: list[tuple[str, str]]) -> Rules:
    """[(pattern, replacement)] -> compiled rules, kept in order."""
    return [(re.compile(pattern), target) for pattern, target in pairs]


def rename_key(key: str, rules: Rules) -> str | None:
    """The key under the first rule that matches it, or None if no rule does."""
    for pattern, target in rules:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def rename_state(state: dict[str, torch.Tensor], rules: Rules) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict under `rules` -> (renamed tensors, the sorted keys no rule matched)."""
    out, unused = {}, []
    for key, tensor in state.items():
        renamed = rename_key(key, rules)
        if renamed is None:
            unused.append(key)
        else:
            out[renamed] = tensor
    return out, sorted(unused)
