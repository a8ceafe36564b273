"""`vidcls train`: fine-tuning on labelled videos; `vidcls distill`: a quadratic model turned into
ff-linear (vidcls.train does the work of both).
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
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1,
        help="Torch threads of the training process (default: as predict's: 1 for a model cheap on a CPU, "
             "else one per core).",
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
                         resume=resume, workers=workers, threads=threads, device=device, seed=seed, flip=flip,
                         shuffle_frames=shuffle_frames, max_bad_fraction=max_bad_fraction,
                         grad_checkpointing=grad_checkpointing)
    result = train(config)
    if result.interrupted:
        raise typer.Exit(128 + signal.Signals[result.interrupted].value)


@command("distill")
@guarded
def distill_command(
    teacher: Annotated[str, typer.Option(
        "--teacher", metavar="REF",
        help="Pretrained quadratic model to start from: a joint or divided model with weights (timesformer-k400, "
             "videomae-k400, demo-motion, hf://..., a model directory).",
    )],
    data: Annotated[Path, typer.Option(
        "--data", metavar="VIDEOS",
        help="Videos to distill on: a folder (every file under it) or a list file; labels are not needed.",
    )],
    output: Annotated[Path, typer.Option(
        "--output", "-o", "--out", metavar="DIR",
        help="Run directory, as train's: the student (config.json + model.safetensors), last/, metrics.jsonl, "
             "train.log, and distill.json (agreement after each stage, cost against the teacher).",
    )],
    student: Annotated[str, typer.Option(
        "--student", metavar="REF",
        help="ff-linear zoo entry whose attention variant the student takes (fixation, gates, neighbourhood); "
             "its sizes, labels and input recipe are the teacher's.",
    )] = "ff-linear",
    val: Annotated[Path | None, typer.Option(
        "--val", metavar="VIDEOS",
        help="Held-out videos for the agreement with the teacher (default: a --holdout share of --data).",
    )] = None,
    holdout: Annotated[float, typer.Option(
        "--holdout", min=0.001, max=0.999,
        help="Share of --data held out (seeded by --seed) when there is no --val.",
    )] = 0.1,
    attention_epochs: Annotated[int, typer.Option(
        "--attention-epochs", min=0,
        help="Epochs of attention transfer: only the linear attentions train, to give each teacher layer's "
             "attention output.",
    )] = 2,
    epochs: Annotated[int, typer.Option(
        "--epochs", min=1, help="Epochs of distillation: the whole student on the teacher's soft labels.",
    )] = 12,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per step and process.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of distillation (AdamW).")] = 1e-3,
    attention_lr: Annotated[float | None, typer.Option(
        "--attention-lr", help="Peak learning rate of attention transfer (default: --lr).",
    )] = None,
    temperature: Annotated[float, typer.Option(
        "--temperature", min=0.01, help="Softmax temperature of the distillation KL.",
    )] = 2.0,
    label_weight: Annotated[float, typer.Option(
        "--label-weight", min=0, max=1,
        help="Share of cross-entropy on the labels of --data (class folders or a labelled list, the teacher's "
             "label names) mixed into the distillation loss; 0: labels are not read.",
    )] = 0.0,
    cache_teacher: Annotated[bool, typer.Option(
        "--cache-teacher",
        help="Run the teacher once per training clip and keep its logits (each clip's augmentation is then "
             "drawn once, not every epoch).",
    )] = False,
    warmup_epochs: Annotated[float, typer.Option(
        "--warmup-epochs", min=0, help="Linear warm-up of each stage (at most half of it), then cosine decay.",
    )] = 1.0,
    precision: Annotated[str, typer.Option(
        "--precision", **one_of("--precision", PRECISIONS), help="bf16/fp16 run under autocast, fp16 with a "
                                                                 "gradient scaler.",
    )] = "fp32",
    compile_model: Annotated[bool, typer.Option("--compile", help="Train through torch.compile.")] = False,
    grad_checkpointing: Annotated[bool, typer.Option(
        "--grad-checkpointing", help="Recompute block activations in the backward pass (less memory).",
    )] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --output from its last checkpoint, with the same options.",
    )] = False,
    report_frames: Annotated[str | None, typer.Option(
        "--report-frames", metavar="N,N,...",
        help="Clip lengths of the cost comparison (default: 1, 4 and 16 x the teacher's frames).",
    )] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="DataLoader worker processes decoding videos (default: as train's).",
    )] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Torch threads of the training process (default: as train's).",
    )] = None,
    device: Annotated[str, typer.Option(
        "--device", **checked("--device", DEVICE_PATTERN, DEVICE_METAVAR),
        help="auto picks CUDA when available; under torchrun each process takes cuda:LOCAL_RANK.",
    )] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split, data order and augmentation.")] = 0,
    flip: Annotated[bool, typer.Option(
        "--flip/--no-flip",
        help="Random horizontal flips (the teacher sees the same flipped clip); turn off with --label-weight "
             "when labels name a direction.",
    )] = True,
    max_bad_fraction: Annotated[float, typer.Option(
        "--max-bad-fraction", min=0, max=1, help="As train's: undecodable videos are skipped up to this share.",
    )] = 0.05,
) -> None:
    """Turn a pretrained quadratic video transformer into ff-linear: weight transfer, attention transfer,
    then distillation on the teacher's soft labels (no labels needed).

    Each epoch appends the stage, the agreement of the student's top-1 with the teacher's and the KL on
    the held-out videos to OUTPUT/metrics.jsonl; OUTPUT is a model directory for `vidcls predict`.
    Ctrl-C or SIGTERM checkpoints and stops; --resume continues. Distributed: torchrun --nproc-per-node N
    -m vidcls distill ...
    """
    import signal

    from vidcls.api import distill

    frames = parse_frames(report_frames) if report_frames else ()
    result = distill(teacher, data, output, student=student, val=val, holdout=holdout,
                     attention_epochs=attention_epochs, epochs=epochs, batch_size=batch_size, lr=lr,
                     attention_lr=attention_lr, temperature=temperature, label_weight=label_weight,
                     cache_teacher=cache_teacher, warmup_epochs=warmup_epochs, precision=precision,
                     compile=compile_model, grad_checkpointing=grad_checkpointing, resume=resume,
                     report_frames=frames, workers=workers, threads=threads, device=device, seed=seed, flip=flip,
                     max_bad_fraction=max_bad_fraction)
    if result.interrupted:
        raise typer.Exit(128 + signal.Signals[result.interrupted].value)


def parse_frames(text: str) -> tuple[int, ...]:
    """--report-frames 32,64,128 -> (32, 64, 128); anything else is a usage error."""
    from vidcls.errors import UsageError

    try:
        frames = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--report-frames {text!r}: give frame counts separated by commas, e.g. 32,64,128") from None
    if not frames or min(frames) < 1:
        raise UsageError(f"--report-frames {text!r}: frame counts must be >= 1")
    return frames
