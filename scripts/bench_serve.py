"""How `vidcls serve` holds up against `vidcls predict` on the same clips (README, Serve).

    python scripts/bench_serve.py                      # demo-motion: decoding is the work
    python scripts/bench_serve.py --model medium       # a ViT-S-wide model (8 blocks) at 112 px: the model is the work

For each model: the throughput of `vidcls predict` over all the clips (predict_run from its first
to its last result: model load and Python start left out; the whole command's wall time too), and of
a server on 127.0.0.1 (a free port) loaded by 8 concurrent clients that share the clips between them
(videos/s, p50/p99 latency, CPU per video, peak memory (PSS) of the server and its decoding workers),
in alternating rounds (the median round is reported: the machine may be shared); then the same load
on a server that runs one view per forward pass (--batch-size 1: no request shares a forward pass
with another), and one client sending one request at a time. Every request goes to 127.0.0.1 only;
the run is bounded by the clip count and rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil  # not a vidcls dependency: the memory and CPU of the server's processes

ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = ("left", "right", "up", "down")
MEDIUM = {"embed_dim": 384, "depth": 8, "num_heads": 6, "img_size": 112, "patch_size": 16, "num_frames": 8}


def make_clips(folder: Path, count: int) -> list[Path]:
    from vidcls.video.synthetic import make_sample_clip

    return [make_sample_clip(folder / f"clip{i:03d}.mp4", direction=DIRECTIONS[i % 4], frames=32, height=112,
                             width=112, seed=i) for i in range(count)]


def medium_model(folder: Path) -> str:
    """demo-motion's card with a ViT-S-wide joint encoder (8 blocks) at 112 px, random weights (its cost counts)."""
    from vidcls.models import build_model
    from vidcls.zoo.modeldir import save_model_dir
    from vidcls.zoo.resolve import resolve

    card = resolve("demo-motion", need_weights=False).card
    card = dataclasses.replace(card, name="medium", arch={**card.arch, **MEDIUM},
                               input=dataclasses.replace(card.input, size=112))
    return str(save_model_dir(folder / "medium", card, build_model(card.family, card.arch)))


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (predict's decoding workers, once reaped)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def predict_command(model: str, clips: list[Path]) -> float:
    """Wall seconds of the whole `vidcls predict ... --json` command (Python start and model load included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidcls", "predict", *map(str, clips), "--model", model, "--json"],
                   cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def predict_run_rate(model: str, clips: list[Path]) -> dict:
    """predict_run (what `vidcls predict` runs) over the clips in this process, from the start of the run
    (model loaded) to its last result: videos/s, and CPU seconds per video (its workers included)."""
    from vidcls.api import predict_run

    marks, cpu = [], []
    predict_run(clips, model, on_start=lambda n: (marks.append(time.perf_counter()), cpu.append(cpu_s())),
                on_result=lambda p: marks.append(time.perf_counter()))
    run = marks[-1] - marks[0]
    return {"videos_per_s": round(len(clips) / run, 1),
            "cpu_ms_per_video": round(1e3 * (cpu_s() - cpu[0]) / len(clips))}


class Server:
    def __init__(self, model: str, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "vidcls", "serve", "--model", model, "--port", "0",
                                         "--max-queue", "256", *args], cwd=ROOT, env=env,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.process.stderr:
            if line.startswith("serving:"):
                self.url = re.search(r"http://127\.0\.0\.1:\d+", line)[0]
                break
        else:
            raise SystemExit("vidcls serve did not start")
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()

    def post(self, data: bytes) -> float:
        start = time.perf_counter()
        request = urllib.request.Request(f"{self.url}/predict?top_k=1", data=data,
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=300) as response:
            json.loads(response.read())
        return time.perf_counter() - start

    def pss_mib(self) -> float:
        """Memory of the server and its children (decoding workers, forkserver): the sum of their proportional
        set sizes (PSS: a page shared by N processes counts 1/N in each, so forked workers are not counted twice)."""
        total = 0
        for process in self.processes():
            try:
                total += process.memory_full_info().pss
            except psutil.Error:
                pass
        return total / 2**20

    def processes(self) -> list:
        server = psutil.Process(self.process.pid)
        return [server, *server.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def load(self, clips: list[bytes], clients: int) -> dict:
        """`clients` threads sending the clips between them, each one request at a time."""
        for data in clips[:clients]:  # warm-up: workers, allocator, the first forward passes
            self.post(data)
        peak, done = [self.pss_mib()], threading.Event()

        def sample() -> None:  # reading smaps costs CPU: twice a second
            while not done.wait(0.5):
                peak.append(self.pss_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu, start = self.cpu_s(), time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = [t for part in pool.map(lambda k: [self.post(d) for d in clips[k::clients]], range(clients))
                         for t in part]
        wall = time.perf_counter() - start
        cpu = self.cpu_s() - cpu
        done.set()
        sampler.join()
        latencies.sort()
        return {"clients": clients, "videos": len(clips), "wall_s": round(wall, 2),
                "videos_per_s": round(len(clips) / wall, 1),
                "p50_ms": round(1e3 * statistics.median(latencies)),
                "p99_ms": round(1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]),
                "cpu_ms_per_video": round(1e3 * cpu / len(clips)), "peak_pss_mib": round(max(peak))}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def median_round(rounds: list[dict], key: str = "videos_per_s") -> dict:
    """The round with the median `key` (the machine may be shared: rounds alternate, the median is reported)."""
    ordered = sorted(rounds, key=lambda r: r[key])
    return {**ordered[len(ordered) // 2], "rounds": [r[key] for r in rounds]}


def bench(model: str, clips: list[Path], clients: int, rounds: int) -> dict:
    """Alternating rounds of predict and of the batching server (the same clips, the same minute), then
    a server with --batch-size 1 and one client at a time."""
    data = [c.read_bytes() for c in clips]
    result = {"model": Path(model).name, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
              "predict_command_s": round(predict_command(model, clips), 2)}
    predicted, batched = [], []
    server = Server(model)
    try:
        for _ in range(rounds):
            predicted.append(predict_run_rate(model, clips))
            batched.append(server.load(data, clients))
    finally:
        server.stop()
    result["predict"], result["batched"] = median_round(predicted), median_round(batched)
    for name, args, count in (("batch_size_1", ("--batch-size", "1"), clients), ("one_client", (), 1)):
        server = Server(model, *args)
        try:
            result[name] = server.load(data, count)
        finally:
            server.stop()
    result["served_over_predict"] = round(result["batched"]["videos_per_s"] / result["predict"]["videos_per_s"], 2)
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-motion", help="a REF, or `medium` (built here, random weights)")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of predict and the server")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = medium_model(Path(tmp)) if args.model == "medium" else args.model
        result = bench(model, make_clips(Path(tmp), args.clips), args.clients, args.rounds)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
