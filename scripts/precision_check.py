"""bf16 against fp32 on every full-size family with random weights (issue 20's target: relative logit error
<= 1%), and where the error comes from.

    python scripts/precision_check.py [--models joint,divided,...] [--frames N] [--out precision.json]

For each zoo architecture at full size (ViT-B bodies, random weights from seed 0, nothing downloaded):
one random clip at the entry's frames and size, logits in fp32 (the reference) and, each as relative
error |logits - fp32| / |fp32|:

  * `bf16`: what `--precision bf16` (and `auto` on a CPU with AMX / AVX512-BF16) runs: devices.cast_module,
    matmul layers in bf16 with the residual stream, LayerNorms, embeddings and the classifier in fp32;
  * with --detail, to tell the sources apart: `whole_bf16`, the whole module cast to bf16 (vidcls's cast
    before): the residual stream rounded to bf16 at every addition; `whole_bf16_head_fp32`, that with the
    classifier alone kept in fp32; `bf16_sdpa_fp32`, `bf16` with attention's softmax computed in fp32.

Forward times are reported too; on a CPU without native bf16 they time emulated bf16, slower than fp32.
--overhead times what the fp32 stream adds to a ViT-B 16x224 forward whatever the matmul unit: per block,
the two LayerNorms in fp32 and their outputs cast to bf16, and the two residual additions of a bf16
output into the fp32 stream, against the same in bf16 (memory-bound work, at about the same speed on
an AVX2 core as on an AMX one), x 12 blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidcls import devices
from vidcls.models import build_model
from vidcls.zoo.catalog import zoo_entries

MODELS = ("joint", "divided", "xvit", "vidtr-s", "c-vidtr-s", "ff-linear", "linear")
BF16 = torch.bfloat16


def relative(out: torch.Tensor, exact: torch.Tensor) -> float:
    return round(((out.float() - exact).norm() / exact.norm()).item(), 5)


def whole_bf16(module: torch.nn.Module, head_fp32: bool = False) -> torch.nn.Module:
    cast = copy.deepcopy(module).to(BF16)
    if head_fp32:
        head = cast.get_classifier().float()
        head.register_forward_pre_hook(lambda layer, args: tuple(a.float() for a in args))
    return cast


@contextlib.contextmanager
def sdpa_in_fp32():
    """scaled_dot_product_attention on fp32 copies of q, k, v (its softmax in fp32), the result in their dtype."""
    real = F.scaled_dot_product_attention

    def fp32(q, k, v, *args, **kwargs):
        return real(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)

    F.scaled_dot_product_attention = fp32
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def timed(run) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = run()
    return out, round(time.perf_counter() - start, 2)


@torch.inference_mode()
def check(name: str, frames: int | None, detail: bool) -> dict:
    entry = zoo_entries()[name]
    arch = dict(entry["arch"])
    if frames:
        arch["num_frames"] = frames
    frames, size = arch.get("num_frames", 8), arch.get("img_size", 224)
    torch.manual_seed(0)
    module = build_model(entry["family"], arch).eval()
    clip = torch.randn(1, 3, frames, size, size)
    exact, fp32_s = timed(lambda: module(clip))
    row = {"model": name, "family": entry["family"], "frames": frames, "size": size, "fp32_s": fp32_s}
    variants = {"bf16": lambda: devices.cast_module(module, "bf16")}
    if detail:
        variants |= {"whole_bf16": lambda: whole_bf16(module),
                     "whole_bf16_head_fp32": lambda: whole_bf16(module, head_fp32=True),
                     "bf16_sdpa_fp32": lambda: devices.cast_module(module, "bf16")}
    for key, make in variants.items():
        cast = make()
        with sdpa_in_fp32() if key.endswith("sdpa_fp32") else contextlib.nullcontext():
            out, row[f"{key}_s"] = timed(lambda cast=cast: cast(clip.to(BF16)))
        row[key] = relative(out, exact)
        row[f"{key}_top1_same"] = bool(out.float().argmax() == exact.argmax())
    return row


@torch.inference_mode()
def stream_overhead(tokens: int = 1568, dim: int = 768, blocks: int = 12, rounds: int = 20) -> dict:
    """ms per forward of the non-matmul work around the matmuls, fp32 stream against bf16 stream."""
    norm32 = torch.nn.LayerNorm(dim)
    norm16 = copy.deepcopy(norm32).to(BF16)
    stream = torch.randn(1, tokens, dim)
    update = torch.randn(1, tokens, dim).to(BF16)

    def fp32_stream():
        for _ in range(2):
            norm32(stream).to(BF16)
            stream + update

    def bf16_stream():
        low = stream.to(BF16)
        for _ in range(2):
            norm16(low)
            low + update

    times = {"fp32_stream": [], "bf16_stream": []}
    for _ in range(rounds):
        for name, run in (("fp32_stream", fp32_stream), ("bf16_stream", bf16_stream)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(v)[len(v) // 2] * blocks * 1e3 for name, v in times.items()}
    return {"tokens": tokens, "dim": dim, "blocks": blocks,
            "ms_per_forward": {k: round(v, 1) for k, v in median.items()},
            "added_ms": round(median["fp32_stream"] - median["bf16_stream"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frames", type=int, help="frames of every model (default: each entry's own)")
    parser.add_argument("--detail", action="store_true", help="also the whole-bf16, head and softmax variants")
    parser.add_argument("--overhead", action="store_true", help="only time what the fp32 stream adds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.overhead:
        print(json.dumps(stream_overhead()), flush=True)
        return
    rows = [{"cpu": devices.describe_device(torch.device("cpu")),
             "native_bf16": devices.native_bf16(torch.device("cpu"))[1]}]
    print(json.dumps(rows[0]), flush=True)
    for name in args.models.split(","):
        rows.append(check(name, args.frames, args.detail))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
    worst = max(row["bf16"] for row in rows[1:])
    print(f"worst bf16 relative logit error: {worst:.2%} (target 1%)", flush=True)


if __name__ == "__main__":
    main()
