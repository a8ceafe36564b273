"""The engine's plan: default workers and threads from the rates of decoding and of the model at the run's
precision and runtime (vidcls.inference.planning), with faked rates and core counts."""

from __future__ import annotations

import os

import pytest
import torch

from vidcls.inference import planning
from vidcls.inference.engine import default_threads, default_workers
from vidcls.inference.planning import decode_core_seconds, model_core_seconds, plan_engine

VIT_B_16x224 = 180.0  # GMACs a view


def split(cores: int, model_s: float | None, decode_s: float = 0.6, device: str = "cpu") -> tuple[int, int]:
    plan = plan_engine(cores, device, model_s, decode_s)
    return plan.workers, plan.threads


@pytest.mark.parametrize("cores", [2, 4, 16, 64])
def test_a_cheap_model_decodes_on_every_core_and_a_heavy_one_in_its_own_process(cores):
    assert split(cores, 0.001) == (cores, 1)  # demo-motion: the work is decoding
    # a model 10^4 times slower than decoding: a worker would take a core from it for a sliver of the work
    assert split(cores, 1e4) == (0, cores)
    assert split(1, 0.001) == split(1, 1e4) == (0, 1)  # one core: nothing to overlap


def test_the_split_follows_the_shares_of_the_work():
    assert split(16, 0.6) == (9, 7)  # half the work decodes (counted 1.5x)
    assert split(16, 1.8) == (5, 11)  # a quarter
    assert split(2, 0.6) == (2, 1)
    # a 16x224 ViT-B view at fp32 on 2 cores: decoding is 10% of the work, and a worker would take one of the
    # model's two cores (or share it with a thread, which stalls the others at every parallel region)
    assert split(2, 6.0, 0.67) == (0, 2)
    assert split(16, 6.0, 0.67) == (3, 13)  # the same on 16 cores: three decode


def test_no_core_does_two_jobs_but_a_cheap_models_one_thread():
    for cores in (2, 3, 8, 16, 48):
        for model_s in (0.01, 0.3, 1.0, 3.0, 10.0, 100.0):
            workers, threads = split(cores, model_s)
            assert workers + threads <= cores or threads == 1, (cores, model_s, workers, threads)


def test_a_faster_model_gets_more_decoding():
    """The same model, 3x faster (bf16 where the CPU has AMX) and 3.7x (OpenVINO): decoding must keep up."""
    gmacs = 2 * VIT_B_16x224
    fp32 = model_core_seconds(gmacs, "fp32", "torch", native_bf16=True)
    bf16 = model_core_seconds(gmacs, "bf16", "torch", native_bf16=True)
    openvino = model_core_seconds(gmacs, "bf16", "openvino", native_bf16=True)
    assert fp32 / bf16 == pytest.approx(2.75) and fp32 / openvino == pytest.approx(3.7)
    plans = [plan_engine(32, "cpu", s, decode_core_seconds(2)) for s in (fp32, bf16, openvino)]
    workers = [p.workers for p in plans]
    threads = [p.threads for p in plans]
    assert workers == sorted(workers) and workers[0] < workers[-1], plans
    assert threads == sorted(threads, reverse=True) and threads[0] > threads[-1], plans
    # the workers then decode as fast as the model runs
    for plan, model_s in zip(plans, (fp32, bf16, openvino), strict=True):
        assert plan.workers / decode_core_seconds(2) >= plan.threads / model_s


def test_emulated_bf16_is_slower_not_faster():
    """On a CPU without native bf16 a bf16 run (asked for) is 5x slower than fp32: decoding needs less."""
    assert model_core_seconds(100, "bf16", "torch", native_bf16=False) == pytest.approx(
        5 * model_core_seconds(100, "fp32", "torch", native_bf16=False))


def test_unknown_cost_and_cuda():
    assert split(16, None) == (4, 16) and split(2, None) == (1, 2)  # the former default
    assert split(16, 0.001, device="cuda") == (14, 16) and split(64, 1e4, device="cuda")[0] == 16
    assert split(1, 0.1, device="cuda") == (1, 1) and split(0, 1.0) == (0, 1)
    assert model_core_seconds(None, "fp32") is None


def test_decoding_cost_grows_with_the_views():
    assert decode_core_seconds(0) == planning.DECODE_CORE_S
    assert decode_core_seconds(15) == pytest.approx(planning.DECODE_CORE_S + 15 * planning.VIEW_CORE_S)
    assert decode_core_seconds(1, frames=8, size=112) == pytest.approx(planning.DECODE_CORE_S
                                                                     + planning.VIEW_CORE_S / 8)


def test_the_engine_defaults_follow_the_plan(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cpu = torch.device("cpu")
    assert (default_workers(cpu, 0.05), default_threads(cpu, 0.05)) == (8, 1)
    assert (default_workers(cpu, 15 * VIT_B_16x224), default_threads(cpu, 15 * VIT_B_16x224)) == (0, 8)
    assert (default_workers(cpu), default_threads(cpu)) == (2, 8)


def test_plan_run_plans_from_the_precision_and_the_runtime(monkeypatch):
    """predict's plan: bf16 on a CPU with AMX (faked) gives the same model more decoding workers than fp32."""
    from vidcls import devices
    from vidcls.inference.options import RunOptions
    from vidcls.inference.predict import plan_run
    from vidcls.zoo.resolve import load_model

    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    model = load_model("joint-tiny", allow_random=True, device="cpu")
    cpu = torch.device("cpu")
    _, exact, cost = plan_run(model, RunOptions(precision="fp32"), cpu)
    # a CPU this slow that the tiny model at fp32 costs as much as decoding its video
    decode_s = decode_core_seconds(cost.views, model.card.input.frames, model.card.input.size)
    monkeypatch.setattr(planning, "CPU_FP32_GMACS_PER_CORE_S", exact.gmacs_per_video / decode_s)
    _, exact, _ = plan_run(model, RunOptions(precision="fp32"), cpu)
    _, auto, _ = plan_run(model, RunOptions(), cpu)
    assert auto.precision == "bf16" and exact.precision == "fp32"
    assert (exact.plan.workers, exact.plan.threads) == (19, 13)  # half the work decodes (counted 1.5x)
    assert (auto.plan.workers, auto.plan.threads) == (25, 7)  # bf16 2.75x faster: more of it decodes
    _, ov, _ = plan_run(model, RunOptions(runtime="openvino"), cpu)
    assert (ov.plan.workers, ov.plan.threads) == (27, 5)  # OpenVINO's bf16, 3.7x
    _, pinned, _ = plan_run(model, RunOptions(workers=3, threads=5), cpu)
    assert (pinned.workers, pinned.threads) == (3, 5)  # asked for: the plan is only the default
