"""The roofline (vidcls.bench.roofline): a matmul rate read on a busy machine is re-measured,
announced when it stays low, and an impossible MFU is flagged as a measurement error."""

import json

import pytest
import torch

from vidcls.bench import roofline, sweep
from vidcls.bench.measurement import Measurement, RunSettings
from vidcls.bench.models import resolve_models

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def record_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path))
    monkeypatch.setattr(roofline, "RETRY_PAUSE_S", 0.0)


def readings(monkeypatch, values):
    """matmul_reading returns these values in turn; the list of calls is returned."""
    calls = []

    def fake(device, dtype, seconds=0.25):
        calls.append(values[len(calls)])
        return calls[-1]

    monkeypatch.setattr(roofline, "matmul_reading", fake)
    return calls


def test_the_rate_is_the_best_of_several_readings_and_is_recorded(monkeypatch):
    calls = readings(monkeypatch, [90.0, 200.0, 150.0])
    assert roofline.matmul_rate(CPU, torch.float32) == 200.0
    assert len(calls) == 3
    record = json.loads(roofline.record_path().read_text())
    assert list(record.values()) == [200.0]


def test_a_rate_far_below_the_last_good_one_is_measured_again(monkeypatch, recwarn):
    readings(monkeypatch, [200.0, 200.0, 200.0])
    roofline.matmul_rate(CPU, torch.float32)
    calls = readings(monkeypatch, [3.0, 3.0, 3.0, 180.0, 10.0, 10.0])  # busy, then a good reading
    assert roofline.matmul_rate(CPU, torch.float32) == 180.0
    assert len(calls) == 6 and not recwarn.list


def test_a_rate_that_stays_low_is_announced_and_not_recorded(monkeypatch):
    readings(monkeypatch, [200.0] * 3)
    roofline.matmul_rate(CPU, torch.float32)
    readings(monkeypatch, [3.0] * 9)
    with pytest.warns(roofline.BusyMachineWarning, match=r"measured now \(3.0 GFLOP/s\) stays far below .*200.0"):
        assert roofline.matmul_rate(CPU, torch.float32) == 3.0
    assert list(json.loads(roofline.record_path().read_text()).values()) == [200.0]


def test_mfu_above_100_percent_is_a_measurement_error_unless_int8():
    assert "MFU 581% exceeds 100%" in roofline.mfu_warning("joint", 8, 5.81, effective=False)
    assert roofline.mfu_warning("joint", 8, 0.6, effective=False) is None
    assert roofline.mfu_warning("joint.onnx", 8, 1.4, effective=True) is None


def test_the_sweep_reports_the_busy_machine_and_the_impossible_mfu(monkeypatch):
    def low_rate(device, dtype):
        roofline.warnings.warn(roofline.BusyMachineWarning("busy machine"))
        return 0.001

    monkeypatch.setattr(sweep, "matmul_rate", low_rate)
    monkeypatch.setattr(sweep, "measure", lambda *args: Measurement([1.0], [1.0], 1.0))
    seen = []
    report = sweep.benchmark(resolve_models(["joint-tiny"]), [8], settings=RunSettings(warmup=0, repeats=1),
                             isolate=False, on_warning=seen.append)
    assert seen == report.warnings
    assert report.warnings[:2] == ["busy machine", "busy machine"]  # the fp32 and the bf16 rate
    assert "joint-tiny T=8: MFU" in report.warnings[-1] and "measurement error" in report.warnings[-1]
