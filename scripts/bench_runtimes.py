"""Runtimes side by side on one ViT-B: torch, ONNX Runtime and OpenVINO as vidcls exports them, and transformers.

VideoMAE ViT-B/16 (the layout of `videomae-k400`) with random weights is built with
transformers (nothing is downloaded), saved with save_pretrained and loaded through vidcls,
so every runtime carries the same weights. The exports are vidcls's own: ONNX by the dynamo
exporter and ONNX Runtime's dynamic int8 (vidcls.export.onnx), OpenVINO by the conversion
behind `--runtime openvino` (zoo.openvino_convert) and NNCF's int8 calibrated on the sample
clips (vidcls.export.openvino), each checked as `vidcls export` checks an untrained model
(fp32: max |logit diff| <= 1e-4; int8: logits' relative error <= 10%, since the top-1 of
random weights is noise). Timing: batch 1, --threads threads for every runtime, one warm-up
each, then --rounds rounds of one forward per runtime in turn, so that a busy spell of a
shared machine hits all alike; medians (wall, and the process's CPU time), the best round,
and speed as the ratio of wall medians against torch fp32.

int8 accuracy needs a trained model: demo-motion exported to ONNX Runtime int8 and OpenVINO
int8 (`vidcls export`, with the agreement gate) against torch fp32, top-1 agreement on
--clips rendered clips drawn with settings its training never saw.

Also reported: what `--runtime openvino` costs once (the conversion) and on every later run
(the weights' digest that finds the cached IR, and compiling from OpenVINO's blob cache).

    python scripts/bench_runtimes.py [--frames 16] [--rounds 5] [--threads 2] [--clips 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from parity_fullsize import randomise, reference_model

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.export import openvino as openvino_export
from vidcls.export.onnx import export_graph
from vidcls.export.onnx import quantize_int8 as onnx_int8
from vidcls.export.parity import check_parity
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.zoo import openvino as openvino_runtime
from vidcls.zoo.onnx import OnnxModule, open_session
from vidcls.zoo.openvino_convert import cached_ir, convert_module, state_digest
from vidcls.zoo.resolve import load_model


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def wall_and_cpu(run) -> tuple[float, float]:
    """Wall seconds and process CPU seconds (all threads) of one call: on a shared machine the CPU time
    is the steadier measure of work (it does not count waiting for a core; it does count spinning)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def exports(module: torch.nn.Module, card, scratch: Path) -> tuple[dict[str, torch.nn.Module], dict]:
    """The four exported runners (ONNX Runtime and OpenVINO, fp32 and int8), each checked, and what they cost."""
    facts: dict = {}
    onnx_fp32, onnx_q = scratch / "fp32.onnx", scratch / "int8.onnx"
    facts["onnx_export_s"] = seconds(lambda: export_graph(module, card, "dynamic", None, onnx_fp32, "videomae"))
    facts["onnx_int8_s"] = seconds(lambda: onnx_int8(onnx_fp32, onnx_q))
    start = time.perf_counter()
    ov_model = convert_module(module, card)
    facts["openvino_convert_s"] = time.perf_counter() - start
    openvino_runtime.save_ir(ov_model, scratch / "fp32.xml", card, {})
    start = time.perf_counter()
    ov_q = openvino_export.quantize_int8(ov_model, card, "dynamic", None)
    facts["openvino_int8_s"] = time.perf_counter() - start
    openvino_runtime.save_ir(ov_q, scratch / "int8.xml", card, {})
    runners = {"ONNX Runtime fp32": OnnxModule(open_session(onnx_fp32)),
               "ONNX Runtime int8": OnnxModule(open_session(onnx_q)),
               "OpenVINO fp32": openvino_runtime.OpenVinoModule(scratch / "fp32.xml"),
               "OpenVINO int8": openvino_runtime.OpenVinoModule(scratch / "int8.xml")}
    for name, runner in runners.items():
        parity = check_parity(module, runner, card, "dynamic", "int8" if "int8" in name else None, name,
                              trained=False)
        facts[f"{name} parity"] = parity.line()
    return runners, facts


def speed(frames: int, size: int, rounds: int, scratch: Path) -> dict:
    """The ViT-B part: every runtime timed alternately on the same weights."""
    torch.manual_seed(0)
    reference = reference_model("videomae", frames)
    randomise(reference)
    reference.save_pretrained(scratch / "videomae")
    loaded = load_model(str(scratch / "videomae"))
    module, card = loaded.module.eval(), loaded.card.at_shape(frames, size)
    clip = torch.randn(1, 3, frames, size, size)
    pixel_values = clip.transpose(1, 2).contiguous()  # transformers takes (B, T, C, H, W)
    runners, facts = exports(module, card, scratch)
    runs = {"transformers fp32": lambda: reference(pixel_values=pixel_values).logits, "vidcls torch fp32": lambda:
            module(clip), **{name: (lambda r=r: r(clip)) for name, r in runners.items()}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        facts["transformers max |logit diff|"] = float((runs["transformers fp32"]() - module(clip)).abs().max())
        for run in runs.values():  # warm-up (OpenVINO compiles here)
            run()
        for _ in range(rounds):
            for name, run in runs.items():
                wall, used = wall_and_cpu(run)
                times[name].append(wall)
                cpu[name].append(used)
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["vidcls torch fp32"]
    rows = [{"runtime": name, "median_s": round(value, 3), "best_s": round(min(times[name]), 3),
             "cpu_s": round(statistics.median(cpu[name]), 3),
             "vs_torch_fp32": round(base / value, 2), "vs_transformers": round(median["transformers fp32"] / value, 2)}
            for name, value in median.items()]
    return {"rows": rows, "facts": {k: round(v, 1) if isinstance(v, float) and "diff" not in k else v
                                    for k, v in facts.items()}, "cache": cache_costs(module, card, scratch)}


def cache_costs(module: torch.nn.Module, card, scratch: Path) -> dict:
    """What --runtime openvino pays on its first run (conversion) and on every later one (digest, cached compile)."""
    os.environ["VIDCLS_HOME"] = str(scratch / "cache-home")  # empty: the first run converts and compiles cold
    first = seconds(lambda: cached_ir(module, card))
    again = seconds(lambda: cached_ir(module, card))
    digest = seconds(lambda: state_digest(module))
    path = cached_ir(module, card)
    compile_cold = seconds(lambda: openvino_runtime.OpenVinoModule(path).compiled_model())
    compile_cached = seconds(lambda: openvino_runtime.OpenVinoModule(path).compiled_model())
    return {"first_run_convert_s": round(first, 1), "later_run_lookup_s": round(again, 2),
            "of_which_digest_s": round(digest, 2), "compile_s": round(compile_cold, 2),
            "compile_from_cache_s": round(compile_cached, 2)}


def agreement(clips: int, scratch: Path) -> dict:
    """Top-1 agreement of demo-motion's int8 exports with torch fp32 on rendered clips (and accuracy)."""
    exported = {"ONNX Runtime int8": scratch / "demo-int8.onnx", "OpenVINO int8": scratch / "demo-int8.xml"}
    for path in exported.values():
        vidcls.export_model("demo-motion", path, quantize="int8")
    rng, paths, truth = random.Random(2020), [], []
    for i in range(clips):
        direction = DIRECTIONS[i % 4]
        spec = random_spec(rng, direction=direction, height=rng.randint(32, 200), width=rng.randint(32, 200),
                           frames=rng.randint(8, 64))
        write_video(scratch / f"clip{i}.mp4", render_clip(spec))
        paths.append(scratch / f"clip{i}.mp4")
        truth.append(direction)

    def top1(ref: str) -> list[str]:
        return [p.top_k[0]["label"] for p in vidcls.predict(paths, ref, top_k=1, workers=0)]

    fp32 = top1("demo-motion")
    result = {"clips": clips, "torch fp32 accuracy": sum(a == t for a, t in zip(fp32, truth, strict=True)) / clips}
    for name, path in exported.items():
        labels = top1(str(path))
        result[f"{name} agreement"] = sum(a == b for a, b in zip(labels, fp32, strict=True)) / clips
        result[f"{name} accuracy"] = sum(a == t for a, t in zip(labels, truth, strict=True)) / clips
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=200, help="rendered clips for demo-motion's int8 agreement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # ONNX Runtime sessions and OpenVINO compile with torch's thread count
    import openvino

    result = {"cpu": f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads", "torch": torch.__version__,
              "openvino": openvino.get_version(), "frames": args.frames, "size": args.size, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="vidcls-runtimes-") as scratch:
        os.environ["VIDCLS_HOME"] = str(Path(scratch) / "home")  # OpenVINO's compiled blobs: not the user's cache
        result["vit_b"] = speed(args.frames, args.size, args.rounds, Path(scratch))
        print(json.dumps(result, indent=1), flush=True)
        result["int8_agreement"] = agreement(args.clips, Path(scratch))
    print(json.dumps(result["int8_agreement"], indent=1))
    print(f"\n{result['cpu']}; VideoMAE ViT-B {args.frames}x{args.size}, batch 1, medians of {args.rounds} rounds\n")
    print("| runtime | s / forward | best s | CPU s | vs torch fp32 | vs transformers fp32 |\n"
          "|---|---:|---:|---:|---:|---:|")
    for row in result["vit_b"]["rows"]:
        print(f"| {row['runtime']} | {row['median_s']:.2f} | {row['best_s']:.2f} | {row['cpu_s']:.2f} | "
              f"{row['vs_torch_fp32']:.2f} | {row['vs_transformers']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
