"""Full-size (ViT-B) parity and speed of vidcls against the `transformers` reference, side by side.

For TimeSformer, VideoMAE and ViViT, and X-CLIP ViT-B/32 and ViT-B/16 (kinds xclip-b32, xclip-b16):
build the transformers model at its published configuration (random weights: nothing is downloaded),
save it with save_pretrained, load that directory through vidcls, and report

  * parity: max |logit difference| in fp32 on one random clip (the bar is 1e-4);
  * speed, batch 1, fp32, for each frame count: both models on the same weights, timed
    alternately in one process (median and best of --repeats), the ratio reference / ours
    (of the medians), and each one's GFLOP/s of model FLOPs, from its best time, against the
    best sgemm rate of this machine measured just before that point (best against best: a
    shared machine's load slows both alike, and the best run is the least disturbed);
  * peak memory of one forward (process resident set above the start, as vidcls benchmark).

    python scripts/parity_fullsize.py [--frames 8,16,32] [--repeats 3] [--kinds timesformer,videomae,vivit]
                                      [--device cpu|cuda] [--json rows.json]

On CUDA, every timing is synchronised and the peak memory is the allocator's; the sgemm rate
is measured on the same device.

transformers' TimeSformer and VideoMAE hard-code their frame count, so each frame count
gets its own reference model; ours is converted from that same model.

X-CLIP is compared on logits_per_video over 8 labels of random token ids (CLIP's start and end
tokens around them; no tokenizer is needed): transformers runs its text encoder on every call,
vidcls encodes the label set once (set_labels), so the timings compare a classification with a
fixed label set, which is what predict runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vidcls.bench import PeakMemory, count_macs
from vidcls.zoo.resolve import load_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_model(kind: str, frames: int):
    """The transformers classifier at its published ViT-B/16 configuration, 400 classes."""
    import transformers as tf

    labels = {"num_labels": 400}
    if kind.startswith("xclip"):
        patch = {"xclip-b32": 32, "xclip-b16": 16}[kind]
        return tf.XCLIPModel(tf.XCLIPConfig(vision_config={"patch_size": patch, "num_frames": frames})).eval()
    if kind == "timesformer":
        return tf.TimesformerForVideoClassification(tf.TimesformerConfig(num_frames=frames, **labels)).eval()
    if kind == "videomae":
        return tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(num_frames=frames, **labels)).eval()
    return tf.VivitForVideoClassification(tf.VivitConfig(num_frames=frames, **labels)).eval()


def randomise(model) -> None:
    """Redraw biases and norm parameters too, so every mapped tensor carries information."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.02 * torch.randn_like(param))


def sgemm_rate(device: torch.device, m: int = 1568, k: int = 768, n: int = 3072, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of the dense products that dominate a ViT-B forward ((tokens x 768) @ (768 x 3072))."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    for _ in range(3):
        a @ b
    best, spent = float("inf"), 0.0
    while spent < seconds:
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2 * m * k * n / best / 1e9


def label_ids(count: int = 8, length: int = 12, seed: int = 0) -> torch.Tensor:
    """Token ids of `count` label prompts as CLIP's tokenizer gives them: <start> words <end>."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(300, 49000, (count, length - 2), generator=generator)
    return torch.cat([torch.full((count, 1), 49406), words, torch.full((count, 1), 49407)], dim=1)


def compare(kind: str, frames: int, repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    reference = reference_model(kind, frames)
    randomise(reference)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        ours = load_model(tmp).module.to(device)
    reference.to(device)
    video = torch.randn(1, 3, frames, 224, 224, device=device)
    pixel_values = video.transpose(1, 2).contiguous()  # transformers takes (B, T, C, H, W)
    if kind.startswith("xclip"):
        ids = label_ids().to(device)
        ours.tokenizer = lambda texts: ids  # the prompts' token ids, as a tokenizer would give them
        with torch.inference_mode():
            ours.set_labels([f"label {i}" for i in range(len(ids))])
        runs = {"reference": lambda: reference(input_ids=ids, pixel_values=pixel_values).logits_per_video,
                "ours": lambda: ours(video)}
    else:
        runs = {"reference": lambda: reference(pixel_values=pixel_values).logits, "ours": lambda: ours(video)}
    row: dict = {"model": kind, "frames": frames}
    with torch.inference_mode():
        row["max_abs_diff"] = (runs["reference"]() - runs["ours"]()).abs().max().item()
        row["gmacs"] = round(count_macs(ours, video).gmacs, 1)
        memory = {}
        for name, run in runs.items():  # warm up, and the peak memory of one forward each
            with PeakMemory(device) as peak:
                run()
            memory[name] = peak.mib
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # alternate, so drifting load on the machine hits both alike
            for name, run in runs.items():
                synchronize(device)
                start = time.perf_counter()
                run()
                synchronize(device)
                seconds[name].append(time.perf_counter() - start)
    for name in runs:
        row[f"{name}_s"] = round(statistics.median(seconds[name]), 3)
        row[f"{name}_best_s"] = round(min(seconds[name]), 3)
        row[f"{name}_gflops_per_s"] = round(2 * row["gmacs"] / min(seconds[name]), 1)
        row[f"{name}_peak_mib"] = None if memory[name] is None else round(memory[name], 1)
    row["speedup"] = round(row["reference_s"] / row["ours_s"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="timesformer,videomae,vivit")
    parser.add_argument("--frames", default="8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; fp32 sgemm rate (1568x768 @ 768x3072) measured before "
          f"each point", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        for frames in (int(f) for f in args.frames.split(",")):
            rate = sgemm_rate(device)
            row = compare(kind, frames, args.repeats, device)
            row["device"] = str(device)
            row["sgemm_gflops_per_s"] = round(rate, 1)
            row["reference_of_sgemm"] = round(row["reference_gflops_per_s"] / rate, 3)
            row["ours_of_sgemm"] = round(row["ours_gflops_per_s"] / rate, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
