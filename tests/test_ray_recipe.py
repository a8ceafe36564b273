"""`vidcls predict --ray` (vidcls.inference.ray) on a local Ray instance: the same results as vidcls.predict.

Skipped when ray is not installed (CI does not install it; `pip install 'vidcls[ray]'`). The
actors import vidcls as an installed package would be imported: by reference, from this checkout
(PYTHONPATH), which is what a cluster with vidcls installed on every node does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.inference.ray import RayOptions, ray_predict, record
from vidcls.inference.results import read_records
from vidcls.video.synthetic import make_sample_clip

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray instance whose workers import this checkout's vidcls."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's worker processes inherit the environment
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # both actors up before the first batch is handed out, so the slow clip's batch is overtaken
    ray.data.DataContext.get_current().wait_for_min_actors_s = 60
    yield
    ray.shutdown()
    monkeypatch.undo()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Six sample clips, a file that is not a video and a missing file, in input order. Clips 0
    and 2 (the first of each run in the test) take ten times longer to decode than the others,
    so results would overtake them if the run did not keep input order."""
    folder = tmp_path_factory.mktemp("clips")
    paths = [str(make_sample_clip(folder / f"{i}.mp4", DIRECTIONS[i % 4], seed=i)) for i in range(6)]
    for slow in (0, 2):
        make_sample_clip(paths[slow], DIRECTIONS[slow % 4], frames=64, height=720, width=1280, seed=slow)
    (folder / "bad.mp4").write_bytes(b"not a video")
    return [*paths, str(folder / "bad.mp4"), str(folder / "missing.mp4")]


@pytest.fixture(scope="module")
def expected(clips: list[str]) -> list[dict]:
    return [p.to_json() for p in vidcls.predict(clips, "demo-motion", device="cpu", workers=0, threads=1)]


def assert_same(records: list[dict], expected: list[dict]) -> None:
    """Every video once, same errors, same top-k labels and scores (to 1e-6) as vidcls.predict."""
    assert sorted(r["video"] for r in records) == sorted(e["video"] for e in expected)
    by_video = {r["video"]: r for r in records}
    for want in expected:
        got = by_video[want["video"]]
        assert got["error"] == want["error"]
        assert [t["label"] for t in got["top_k"]] == [t["label"] for t in want["top_k"]]
        assert [t["score"] for t in got["top_k"]] == pytest.approx([t["score"] for t in want["top_k"]], abs=1e-6)
    assert any(e["error"] is None for e in expected) and any(e["error"] for e in expected)


def predict_on_ray(*args: str):
    return CliRunner().invoke(app, ["predict", *args, "--model", "demo-motion", "--ray", "auto",
                                    "--concurrency", "2", "--batch-videos", "1"])


def test_ray_run_matches_predict(local_ray, clips, expected, tmp_path) -> None:
    """One test, so that pytest-xdist starts one Ray instance, not one per worker."""
    # an output FILE: in input order, resumable
    output = tmp_path / "preds.jsonl"
    first = predict_on_ray(*clips[:2], "--output", str(output))  # the slow clip first
    assert first.exit_code == 0, first.output
    refused = predict_on_ray(*clips, "--output", str(output))  # results there, no --resume
    assert refused.exit_code == 2 and "add --resume" in refused.stderr
    resumed = predict_on_ray(*clips, "--output", str(output), "--resume")  # the slow clip first
    assert resumed.exit_code == 1  # the bad and the missing file, one error line each
    lines = resumed.stderr.splitlines()
    assert [line.split(": ")[1] for line in lines if line.startswith("error:")] == clips[-2:]
    assert lines[-1].startswith(f"done: 6 classified (2 failed), 2 already there: {output}; 2 Ray actors")
    records = read_records(output)
    assert [r["video"] for r in records] == clips  # input order, each video once
    assert_same(records, expected)

    # an output FOLDER: Ray's write_json files, nested fields as JSON text
    folder = tmp_path / "preds"
    run = ray_predict(clips, "demo-motion", folder, cluster=RayOptions(concurrency=2, batch_videos=1))
    assert (run.classified, run.failed) == (8, 2)
    lines = [json.loads(line) for f in sorted(folder.glob("*.json")) for line in f.read_text().splitlines()]
    assert_same([record(row) for row in lines], expected)
