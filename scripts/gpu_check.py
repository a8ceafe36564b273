"""One command for a lent GPU: every family on CUDA in fp32 / bf16 / fp16, against transformers where a
reference exists, the attention kernel SDPA picks, and the engine's GPU busy share with its defaults.

    python scripts/gpu_check.py [--device cuda] [--out gpu_check.json]       # under 8 minutes on one H100
    python scripts/gpu_check.py --device cpu --tiny                          # a dry run of the script itself

Per family (random weights at the zoo entry's recipe; nothing is downloaded):
  * `bf16_rel`, `fp16_rel`: |logits - fp32 logits| / |fp32 logits| with the weights cast once
    (what `--precision bf16|fp16` runs), and each precision's median forward time;
  * for timesformer / videomae / vivit layouts: `ref_max_abs_diff`, fp32 against transformers' model on
    the same weights (the bar is 1e-4), and `ref_bf16_rel`, ours in bf16 against transformers in fp32;
  * `sdpa_kernel`: which scaled-dot-product-attention kernel ran in bf16 (flash, memory-efficient,
    cuDNN or math), read from the profiler's kernel names.
Then the engine: videos/s and the GPU busy share (model time over wall time) of `predict_run` with its
default workers and threads on 48 generated clips, against `workers=0`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import vidcls
from vidcls import devices
from vidcls.models import build_model
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo.catalog import zoo_entries
from vidcls.zoo.modeldir import InputSpec, ModelCard, save_model_dir

sys.path.insert(0, str(Path(__file__).parent))
from parity_fullsize import randomise, reference_model  # noqa: E402 - the sibling script's reference builders

# each full-size zoo architecture, and the tiny entry of its family for a dry run
MODELS = {"ff-linear": "ff-linear-tiny", "linear": "linear-tiny", "xvit": "xvit-tiny", "vidtr-s": "vidtr-tiny",
          "c-vidtr-s": "c-vidtr-tiny", "joint": "joint-tiny", "divided": "divided-tiny"}
REFERENCES = {"timesformer": "divided", "videomae": "joint", "vivit": "joint"}


def timed(run, device: torch.device, repeats: int = 5) -> tuple[torch.Tensor, float]:
    out = run()
    times = []
    for _ in range(repeats):
        devices_sync(device)
        start = time.perf_counter()
        out = run()
        devices_sync(device)
        times.append(time.perf_counter() - start)
    return out.float(), statistics.median(times)


def devices_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(((a - b).norm() / b.norm()).item(), 5)


def sdpa_kernel(module: torch.nn.Module, clip: torch.Tensor) -> str:
    """The attention kernel one bf16 forward launched, from the profiler's CUDA kernel names."""
    if clip.device.type != "cuda":
        return "n/a (cpu)"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.inference_mode():
        module(clip)
    names = " ".join(event.key.lower() for event in prof.key_averages())
    for kernel in ("flash", "efficient", "cudnn", "fmha"):
        if kernel in names:
            return kernel
    return "math"


def check_family(name: str, device: torch.device) -> dict:
    entry = zoo_entries()[name]
    arch = entry["arch"]
    frames, size = arch.get("num_frames", 8), arch.get("img_size", 224)
    torch.manual_seed(0)
    module = build_model(entry["family"], arch).eval().to(device)
    clip = torch.randn(1, 3, frames, size, size, device=device)
    row: dict = {"model": name, "frames": frames, "size": size}
    with torch.inference_mode():
        exact, row["fp32_s"] = timed(lambda: module(clip), device)
        for precision in ("bf16", "fp16"):
            cast = devices.cast_module(module, precision)
            dtype = devices.PRECISIONS[precision]
            try:
                out, row[f"{precision}_s"] = timed(lambda cast=cast, dtype=dtype: cast(clip.to(dtype)), device)
                row[f"{precision}_rel"] = relative(out, exact)
            except RuntimeError as exc:  # fp16 kernels a CPU lacks
                row[f"{precision}_rel"] = f"failed: {str(exc).splitlines()[0]}"
        row["sdpa_kernel"] = sdpa_kernel(devices.cast_module(module, "bf16"), clip.to(torch.bfloat16))
    return row


def check_reference(kind: str, device: torch.device, tiny: bool) -> dict:
    if tiny:
        return {"model": f"{kind} (transformers)", "skipped": "full size only"}
    frames = 8
    torch.manual_seed(0)
    reference = reference_model(kind, frames)
    randomise(reference)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        ours = vidcls.load_model(tmp).module.to(device).eval()
    reference.to(device)
    clip = torch.randn(1, 3, frames, 224, 224, device=device)
    with torch.inference_mode():
        expected = reference(pixel_values=clip.transpose(1, 2).contiguous()).logits.float()
        got = ours(clip).float()
        fast = devices.cast_module(ours, "bf16")(clip.to(torch.bfloat16)).float()
    return {"model": f"{kind} (transformers)", "family": REFERENCES[kind],
            "ref_max_abs_diff": (expected - got).abs().max().item(), "ref_bf16_rel": relative(fast, expected)}


def check_engine(device: torch.device, tiny: bool, folder: Path) -> dict:
    """videos/s and GPU busy share of predict_run with the defaults, against workers=0."""
    arch = {**zoo_entries()["joint-tiny" if tiny else "joint"]["arch"], "num_classes": 400}
    frames, size = arch["num_frames"], arch["img_size"]
    card = ModelCard(name="videomae-random", family="joint", arch=arch, input=clip_recipe(frames, size),
                     labels=[f"class_{i}" for i in range(400)])
    directory = save_model_dir(folder / "model", card, build_model("joint", arch))
    clips = [make_sample_clip(folder / f"clip{i}.mp4", "left", frames=75, height=256, width=456, seed=i)
             for i in range(8 if tiny else 48)]
    model = vidcls.load_model(str(directory), device=str(device))
    row: dict = {"model": "joint (VideoMAE layout)", "videos": len(clips)}
    for label, options in (("defaults", {}), ("workers0", {"workers": 0})):
        start = time.perf_counter()
        run = vidcls.predict_run(clips, model, **options)
        wall = time.perf_counter() - start
        model_s = sum(p.timing_ms.get("model", 0.0) for p in run.predictions) / 1e3
        row[f"{label}_videos_per_s"] = round(len(clips) / wall, 2)
        row[f"{label}_busy_share"] = round(model_s / wall, 3)
        row[f"{label}_precision"] = run.cost.precision
    return row


def clip_recipe(frames: int, size: int) -> InputSpec:
    """VideoMAE's dense 16x4 sampling at one view, so the run measures the engine, not multi-view."""
    return InputSpec(frames=frames, size=size, stride=4, sampling="dense", clips=1, crops=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: check the script, not the GPU")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = {"device": devices.describe_device(device), "native_bf16": devices.native_bf16(device)[1]}
    rows["families"] = [check_family(tiny if args.tiny else name, device) for name, tiny in MODELS.items()]
    rows["references"] = [check_reference(kind, device, args.tiny) for kind in REFERENCES]
    with tempfile.TemporaryDirectory() as tmp:
        rows["engine"] = check_engine(device, args.tiny, Path(tmp))
    args.out.write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
