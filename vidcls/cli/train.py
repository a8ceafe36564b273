"""`vidcls train`: fine-tuning on labelled videos (vidcls.train does the work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidcls.choices import (
    DEVICE_METAVAR,
    DEVICE_PATTERN,
    INFLATIONS,
    OPTIMIZERS,
    PRECISIONS,
)
from vidcls.cli.app import checked, command, guarded, one_of

LR_DEFAULTS = ", ".join(f"{lr:g} for {name}" for name, (lr, _) in OPTIMIZERS.items())
DECAY_DEFAULTS = ", ".join(f"{decay:g} {name}" for name, (_, decay) in OPTIMIZERS.items())


@command("train")
@guarded
def train_command(
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="REF",
        help="Architecture to fine-tune: zoo name, hf://OWNER/REPO or hf://OWNER/REPO@REV, or a model directory.",
    )],
    train_data: Annotated[Path, typer.Option(
        "--train", metavar="DATA",
        help="Training data: a folder with one sub-folder per class, or a list "
             "file ('path label' lines, or a CSV with path and label columns).",
    )],
    val_data: Annotated[Path, typer.Option(
        "--val", metavar="DATA",
        help="Validation data, same formats; only the training classes may appear.",
    )],
    output: Annotated[Path, typer.Option(
        "--output", "-o", "--out", metavar="DIR",
        help="Run directory: best model (config.json + model.safetensors), "
             "last/, metrics.jsonl, train.log; --out is an alias.",
    )],
    epochs: Annotated[int, typer.Option(
        "--epochs", min=1,
        help="Epochs in all; with --resume, more than the run planned extends it.",
    )] = 10,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1,
        help="Clips per step and process (effective batch: x processes x --accumulate).",
    )] = 8,
    lr: Annotated[float | None, typer.Option("--lr", help=f"Peak learning rate (default: {LR_DEFAULTS}).")] = None,
    optimizer: Annotated[str, typer.Option(
        "--optimizer", **one_of("--optimizer", OPTIMIZERS),
        help="sgd: momentum 0.9, Nesterov.",
    )] = "adamw",
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay",
        help=f"On Linear/conv weights only, never on norms, biases or embeddings (default: {DECAY_DEFAULTS}).",
    )] = None,
    warmup_epochs: Annotated[float, typer.Option(
        "--warmup-epochs", min=0,
        help="Linear warm-up length (at most half the run), then cosine decay to zero.",
    )] = 1.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0, max=0.99)] = 0.1,
    clip_grad: Annotated[float, typer.Option("--clip-grad", min=0, help="Max gradient norm (0: no clipping).")] = 1.0,
    accumulate: Annotated[int, typer.Option(
        "--accumulate", min=1,
        help="Batches per optimizer step (gradient accumulation).",
    )] = 1,
    precision: Annotated[str, typer.Option(
        "--precision", **one_of("--precision", PRECISIONS),
        help="bf16/fp16 run under autocast, fp16 with a gradient scaler.",
    )] = "fp32",
    compile_model: Annotated[bool, typer.Option("--compile", help="Train through torch.compile.")] = False,
    init: Annotated[str | None, typer.Option(
        "--init", metavar="REF",
        help="none (random), imagenet, or a model REF whose weights to start from (its head is kept when "
             "the data's classes are among its labels, else replaced); default: --model's own weights if it "
             "has any, else none.",
    )] = None,
    inflate: Annotated[str, typer.Option(
        "--inflate", **one_of("--inflate", INFLATIONS),
        help="With --init imagenet: put the image patch kernel on the central frame of "
             "each tubelet (central) or spread it evenly over the tubelet (average).",
    )] = "central",
    resume: Annotated[bool, typer.Option(
        "--resume",
        help="Continue the run in --output from its last checkpoint, with the same options; a "
             "larger --epochs extends it (the learning-rate schedule is re-planned, see train.log).",
    )] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0,
        help="DataLoader worker processes decoding videos (default: as predict's, from the cores, the device "
             "and the model's cost; 0: decode in the training process).",
    )] = None,
    device: Annotated[str, typer.Option(
        "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
        help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.",
    )] = "auto",
    seed: Annotated[int, typer.Option(
        "--seed",
        help="Seeds initialisation, data order and augmentation; same seed, same run.",
    )] = 0,
    flip: Annotated[bool, typer.Option(
        "--flip/--no-flip",
        help="Random horizontal flips; turn off when labels name a direction (Something-Something).",
    )] = True,
    max_bad_fraction: Annotated[float, typer.Option(
        "--max-bad-fraction", min=0, max=1,
        help="Stop when more than this share of a split cannot be decoded "
             "(each bad video is skipped and listed in train.log).",
    )] = 0.05,
    grad_checkpointing: Annotated[bool, typer.Option(
        "--grad-checkpointing",
        help="Recompute each block's activations in the backward pass instead of keeping them: far less "
             "memory for long clips, about a third more compute, the same result (may change on --resume).",
    )] = False,
    shuffle_frames: Annotated[bool, typer.Option(
        "--shuffle-frames", hidden=True,
        help="Control experiment: frames of every clip in random order.",
    )] = False,
) -> None:
    """Fine-tune a model on a video dataset; the output directory is a model for `vidcls predict`.

    Every epoch appends train loss, val loss, top-1, top-5, time and clips/s to
    OUTPUT/metrics.jsonl, keeps the best weights (by val top-1) in OUTPUT and the resumable
    state in OUTPUT/last. Ctrl-C or SIGTERM checkpoints and stops; --resume continues.
    Distributed: torchrun --nproc-per-node N -m vidcls train ...
    """
    import signal

    from vidcls.train import TrainConfig, train

    config = TrainConfig(model=model, train=train_data, val=val_data, output=output, epochs=epochs,
                         batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, clip_grad=clip_grad,
                         accumulate=accumulate, precision=precision, compile=compile_model, init=init, inflate=inflate,
                         resume=resume, workers=workers, device=device, seed=seed, flip=flip,
                         shuffle_frames=shuffle_frames, max_bad_fraction=max_bad_fraction,
                         grad_checkpointing=grad_checkpointing)
    result = train(config)
    if result.interrupted:
        raise typer.Exit(128 + signal.Signals[result.interrupted].value)
