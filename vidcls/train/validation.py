"""The validation pass that train and distill share: the net over each held-out video's test views.

What is summed differs (train: loss and top-1/top-5 hits against the labels; distill: agreement and
KL against the teacher), how the pass runs does not: the net in eval mode, a progress bar, videos that
failed to decode noted, a stop request honoured part-way, the sums added across the processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidcls import devices as distributed
from vidcls.devices import autocast_context
from vidcls.train.log import Bars

BatchSums = Callable[[torch.Tensor, torch.Tensor], list[float]]
Trainer = Any  # loop's Trainer (or distill's subclass); not imported: loop imports this module


def view_probs(net: nn.Module, views: torch.Tensor, precision: str) -> torch.Tensor:
    """(videos, views, C, T, H, W) -> the net's softmax averaged over each video's views, in float32."""
    with autocast_context(views.device, precision):
        logits = net(views.flatten(0, 1))
    return logits.float().softmax(-1).unflatten(0, views.shape[:2]).mean(1)


def val_sums(trainer: Trainer, bars: Bars, title: str, width: int, batch_sums: BatchSums) -> list[float] | None:
    """`batch_sums(views on the device, the batch's labels)` (`width` sums, the video count last) added
    up over the validation set and the processes; the count is at least 1. None when a stop was
    requested part-way (the run resumes at this evaluation)."""
    sums = torch.zeros(width, dtype=torch.float64)
    bars.start(title, len(trainer.val_loader), transient=True)
    trainer.net.eval()
    for done, batch in enumerate(trainer.val_loader, 1):
        trainer.note_failures(trainer.val_set, "val", batch.failures)
        if batch.videos is not None:
            sums += torch.tensor(batch_sums(batch.videos.to(trainer.info.device), batch.labels), dtype=torch.float64)
        bars.update(done)
        if trainer.stop.requested:
            break
    bars.finish()
    trainer.net.train()
    if trainer.stop.requested:
        return None
    totals = distributed.sum_across(sums, trainer.info).tolist()
    return [*totals[:-1], max(1.0, totals[-1])]


def train_means(trainer: Trainer) -> tuple[float, float]:
    """The epoch's mean train loss and its clip count, over the processes."""
    loss, clips = distributed.sum_across(trainer.train_sums, trainer.info).tolist()
    return loss / max(1.0, clips), clips
