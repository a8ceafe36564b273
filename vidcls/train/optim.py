"""The optimizer of a run: AdamW or SGD over parameter groups with weight decay on weight matrices
only, and the seeding of every random source a run draws from."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from vidcls.models.layers import WEIGHT_LAYERS
from vidcls.train.config import TrainConfig


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay only on the weight matrices of Linear and convolution layers.

    Norm scales, biases, position / time embeddings and learned tokens get none: shrinking
    them toward zero regularises nothing and hurts transformers. Deciding by layer type
    rather than by name works for every family without knowing its parameter names.
    """
    decayed = {id(m.weight) for m in module.modules() if isinstance(m, WEIGHT_LAYERS)}
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]


def make_optimizer(config: TrainConfig, module: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer of `module`'s trainable parameters, at `lr` (default: the config's learning rate)."""
    groups = parameter_groups(module, config.decay)
    lr = config.learning_rate if lr is None else lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and `random` (user code and libraries may draw from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
