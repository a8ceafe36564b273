"""Train the `demo-motion` model that ships inside vidcls (vidcls/assets/demo-motion).

Reproduce the shipped weights with:

    python scripts/train_demo_motion.py --out vidcls/assets/demo-motion

The data is drawn by vidcls.video.synthetic: one shape moving left, right, up or down over a
varied background. Every clip gets its own size (32-128 px, square or not), shape, colour,
speed, length and noise level, then goes through the preprocessing of `vidcls predict`
(segment sampling of 8 frames, the whole frame resized to 32x32: `aspect: squash`, since a
square crop of a wide frame would cut off most of a horizontal path) with, per epoch, scale
jitter and a random crop, so the model learns the direction of motion, not one rendering. The pool of clips is
rendered once (rendering costs more than a training step on a CPU).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidcls.choices import DIRECTIONS
from vidcls.models import build_model
from vidcls.video.sampling import segment_indices
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.video.transforms import eval_views, fit_frame, to_channels_first, train_view
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir

# A joint space-time ViT: tubelets of 2 frames see motion directly and full attention relates
# positions across frames; it learns this task in a few hundred steps (a tiny ff-linear of
# the same width sat at chance for the first 5 epochs and costs 3x more per step on a CPU).
FAMILY = "joint"
ARCH = {"num_classes": len(DIRECTIONS), "num_frames": 8, "img_size": 32, "patch_size": 4,
        "tubelet_size": 2, "embed_dim": 64, "depth": 3, "num_heads": 4, "mlp_ratio": 2.0}
INPUT = InputSpec(frames=8, stride=1, sampling="segment", size=32, mean=(0.5, 0.5, 0.5),
                  std=(0.5, 0.5, 0.5), clips=1, crops=1, aspect="squash")
POOL_SIDE = 40  # training clips are stored at this side; scale jitter crops 32..40 px of it


def rendered_clip(rng: random.Random) -> tuple[torch.Tensor, int]:
    """One clip as predict decodes it (the 8 frames segment sampling picks), squashed to
    POOL_SIDE x POOL_SIDE uint8 (T, H, W, 3) so per-epoch augmentation stays cheap."""
    label = rng.randrange(len(DIRECTIONS))
    spec = random_spec(rng, direction=DIRECTIONS[label], frames=rng.randint(8, 48))
    frames = render_clip(spec)
    frames = to_channels_first(frames[segment_indices(frames.shape[0], INPUT.frames)[0]])
    squashed = fit_frame(frames, POOL_SIDE, INPUT.aspect)
    return (squashed * 255).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous(), label


def render_pool(rng: random.Random, count: int) -> list[tuple[torch.Tensor, int]]:
    return [rendered_clip(rng) for _ in range(count)]


def batches(pool: list[tuple[torch.Tensor, int]], generator: torch.Generator, size: int):
    """One epoch of augmented batches (scale jitter + random crop, never a flip) in random order."""
    order = torch.randperm(len(pool), generator=generator).tolist()
    for start in range(0, len(order) - size + 1, size):
        chosen = [pool[i] for i in order[start:start + size]]
        views = [train_view(frames, INPUT.size, INPUT.mean, INPUT.std, generator, resize=POOL_SIDE,
                            scale=(INPUT.size / POOL_SIDE, 1.0), flip=False, aspect=INPUT.aspect)
                 for frames, _ in chosen]
        yield torch.stack(views), torch.tensor([label for _, label in chosen])


def held_out_views(pool: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The predict-time view of every held-out clip."""
    views = [eval_views(frames[None], INPUT.size, 1, INPUT.mean, INPUT.std, aspect=INPUT.aspect)[0]
             for frames, _ in pool]
    return torch.stack(views), torch.tensor([label for _, label in pool])


def evaluate(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    with torch.inference_mode():
        accuracy = (model(data[0]).argmax(-1) == data[1]).float().mean().item()
    model.train()
    return accuracy


def train_run(pool, held_out, args, seed: int) -> tuple[torch.nn.Module, float] | None:
    """One training run from seed `seed`; None if it is still at chance after --plateau-epochs.

    Telling the directions apart needs a product of features (the sign of the temporal change
    times the sign of the spatial edge, whose polarity is random per clip), so a run first
    sits on a plateau at chance: usually for 200-400 steps, sometimes for many epochs. A
    run that has not left it in time is restarted from the next seed instead of waiting.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(FAMILY, ARCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * (len(pool) // args.batch_size)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.time()
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        for clips, labels in batches(pool, generator, args.batch_size):
            loss = F.cross_entropy(model(clips), labels, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        accuracy = evaluate(model, held_out)
        print(f"seed {seed}  epoch {epoch:3d}  loss {loss.item():.3f}  held-out acc {accuracy:.3f}  "
              f"{time.time() - start:.0f}s", flush=True)
        if epoch == args.plateau_epochs and accuracy < 0.5:
            print(f"seed {seed}: still at chance after {epoch} epochs; restarting from seed {seed + 1}", flush=True)
            return None
    return model, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("vidcls/assets/demo-motion"))
    parser.add_argument("--clips", type=int, default=3000, help="training clips rendered")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plateau-epochs", type=int, default=5,
                        help="restart from the next seed if held-out accuracy is below 0.5 after this many epochs")
    parser.add_argument("--max-restarts", type=int, default=5)
    args = parser.parse_args()

    start = time.time()
    pool = render_pool(random.Random(args.seed), args.clips)
    held_out_pool = render_pool(random.Random(args.seed + 1), 256)
    held_out = held_out_views(held_out_pool)
    print(f"rendered {len(pool)} + {len(held_out_pool)} clips in {time.time() - start:.0f}s", flush=True)
    for seed in range(args.seed, args.seed + args.max_restarts + 1):
        run = train_run(pool, held_out, args, seed)
        if run is not None:
            break
    else:
        raise SystemExit(f"no run left the plateau in {args.max_restarts + 1} tries; try more --clips or --epochs")
    model, accuracy = run
    card = ModelCard(name="demo-motion", family=FAMILY, arch=ARCH, input=INPUT, labels=list(DIRECTIONS))
    save_model_dir(args.out, card, model.eval())
    print(f"wrote {args.out} (seed {seed}, held-out accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
