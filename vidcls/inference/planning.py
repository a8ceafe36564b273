"""How a run splits the machine between decoding and the model: the default workers and threads.

On a CPU the decoding workers and the model's threads share the same cores, so the split follows
the two rates: core-seconds of decoding per video (about the same on every x86 core) against
core-seconds of the model per video, which the precision and runtime change by 0.2x to 4x
(bf16 on a CPU with AMX, OpenVINO, int8; emulated bf16 is slower than fp32). A model that got 3x
faster needs about 3x the decoding to keep it fed, so the plan is recomputed from the rate of the
run's precision and runtime, not from the model's size alone.

On CUDA the model is on the GPU and the cores have nothing else to do: every core but two decodes
(one for the model process, one for the pinning thread), at most 16.

Everything here is pure (no torch, no clocks): the numbers come in as arguments, so the planning is
tested with faked rates and core counts (tests/test_planning.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# What torch fp32 reaches on one CPU core over a whole ViT forward (not the sgemm peak): a VideoMAE
# ViT-B 16x224 view (180 GMACs) in 3.0 s on 2 cores of an AMD EPYC (AVX2), 2.8 s on 2 of a Xeon
# (AVX-512, issue 20's quiet measurement): about 30 GMAC/s a core.
CPU_FP32_GMACS_PER_CORE_S = 30.0

# The model's speed against torch fp32 on the same CPU, by (runtime, precision, native bf16). Measured:
# torch bf16 with weights cast once 2.75x on AMX (1.01 s against 2.78 s), emulated bf16 0.2x on AVX2
# (56.7 s against 11.4 s); OpenVINO's bf16 3.7x (1.24 s against 4.53 s for transformers fp32) and its
# f32 1.0x on AVX2; ONNX Runtime fp32 1.1x and int8 1.56x on AVX2 (README's runtime table).
SPEEDUP: dict[tuple[str, str, bool], float] = {
    ("torch", "fp32", False): 1.0, ("torch", "fp32", True): 1.0,
    ("torch", "bf16", False): 0.2, ("torch", "bf16", True): 2.75,
    ("torch", "fp16", False): 0.2, ("torch", "fp16", True): 0.2,  # no CPU here multiplies fp16 natively
    ("openvino", "fp32", False): 1.0, ("openvino", "fp32", True): 1.0,
    ("openvino", "bf16", False): 1.0, ("openvino", "bf16", True): 3.7,  # f32 where the CPU lacks bf16
    ("openvino", "int8", False): 1.2, ("openvino", "int8", True): 3.7,
    ("onnxruntime", "fp32", False): 1.1, ("onnxruntime", "fp32", True): 1.1,
    ("onnxruntime", "int8", False): 1.56, ("onnxruntime", "int8", True): 1.56,
}

# Decoding a K400-like video (10 s, 456x256, 25 fps: every frame is decoded and resized) cost 0.6 s of one
# core, and cutting and normalising each 16x224 view 0.07 s more (AMD EPYC, one decoder thread).
DECODE_CORE_S = 0.6
VIEW_CORE_S = 0.07  # per view of 16 frames at 224x224; scaled by frames x size^2
# Decoding counted 1.5x in the plan: decode times vary from video to video, and a worker with nothing to
# do only waits on its queue, while a model that waits on decoding loses its whole rate.
WORKER_HEADROOM = 1.5


@dataclass(frozen=True)
class EnginePlan:
    """Decoding processes and model threads for a run, and why (one line for reports)."""

    workers: int
    threads: int
    reason: str


def model_core_seconds(gmacs_per_video: float | None, precision: str, runtime: str = "torch",
                       native_bf16: bool = False) -> float | None:
    """Core-seconds of the model per video on a CPU at the run's precision and runtime (None: cost unknown)."""
    if gmacs_per_video is None:
        return None
    speedup = SPEEDUP.get((runtime, precision, native_bf16), 1.0)
    return gmacs_per_video / (CPU_FP32_GMACS_PER_CORE_S * speedup)


def decode_core_seconds(views: int, frames: int = 16, size: int = 224) -> float:
    """Core-seconds of decoding and cutting `views` views of frames x size x size from a K400-like video."""
    return DECODE_CORE_S + VIEW_CORE_S * views * (frames * size * size) / (16 * 224 * 224)


def plan_engine(cores: int, device_type: str, model_core_s: float | None, decode_core_s: float = DECODE_CORE_S
                ) -> EnginePlan:
    """Workers and threads that keep decoding ahead of the model without two jobs on one core.

    CPU: each split is timed by the rates, per video: decoding in the model's process (workers 0, a
    thread per core) takes d + m / cores (the cores wait while one decodes); w workers and the other
    cores' threads take max(d / w, m / threads, (d + m) / cores) (the slower side sets the pace, and no
    split beats the cores' total). d counts WORKER_HEADROOM. The fastest wins, the fewer workers among
    equals: a cheap model gets one worker per core and one thread (its threads have nothing to do), a
    model that leaves decoding a small share of few cores decodes in its own process, and the more
    cores or the faster the model (bf16, OpenVINO), the more workers.
    Unknown cost (None): a quarter of the cores decode, the model takes every core (the former default).
    CUDA: cores - 2 workers (at most 16), one thread per core.
    """
    cores = max(1, cores)
    if device_type == "cuda":
        return EnginePlan(max(1, min(16, cores - 2)), cores, "CUDA: the cores decode, the GPU runs the model")
    if model_core_s is None:
        return EnginePlan(max(1, cores // 4), cores, "model cost unknown")
    d, m = WORKER_HEADROOM * decode_core_s, max(model_core_s, 0.0)

    def seconds(workers: int) -> float:
        if workers == 0:
            return d + m / cores
        threads = max(1, cores - workers)
        return max(d / workers, m / threads, (d + m) / cores)

    workers = min(range(cores + 1), key=lambda w: (round(seconds(w), 9), w))
    threads = cores if workers == 0 else max(1, cores - workers)
    share = decode_core_s / (decode_core_s + m)
    return EnginePlan(workers, threads, f"decoding {share:.0%} of the work ({decode_core_s:.2g} core-s a video, "
                                        f"the model {m:.2g}): {seconds(workers):.2g} s a video")
