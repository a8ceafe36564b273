"""The Ray Data recipe (scripts/ray_predict.py) on a local Ray instance: same results as vidcls.predict.

Skipped when ray is not installed (CI does not install it). The script is loaded from its
file without registering it as a module, so Ray ships its actor class to the workers by value,
as it does for users who run the script as __main__.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.inference.results import read_records
from vidcls.video.synthetic import make_sample_clip

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    """The script as a module, with a local 2-CPU Ray instance whose workers import this checkout's vidcls."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's worker processes inherit the environment
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # both actors up before the first batch is handed out, so the slow clip's batch is overtaken
    ray.data.DataContext.get_current().wait_for_min_actors_s = 60
    spec = importlib.util.spec_from_file_location("ray_predict", ROOT / "scripts" / "ray_predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    ray.shutdown()
    monkeypatch.undo()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Six sample clips, a file that is not a video and a missing file, in input order. Clips 0
    and 2 (the first of each run in the test) take ten times longer to decode than the others,
    so results would overtake them if the recipe did not keep input order."""
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


def run(recipe, *args: str) -> int:
    return recipe.main([*args, "--model", "demo-motion", "--concurrency", "2", "--batch-videos", "1"])


def test_recipe_matches_predict(recipe, clips, expected, tmp_path, capsys) -> None:
    """One test, so that pytest-xdist starts one Ray instance, not one per worker."""
    # an output FILE: in input order, resumable
    output = tmp_path / "preds.jsonl"
    assert run(recipe, *clips[:2], "--output", str(output)) == 0  # the slow clip first
    assert run(recipe, *clips, "--output", str(output)) == 2  # results there, no --resume: refused
    assert "add --resume" in capsys.readouterr().err
    assert run(recipe, *clips, "--output", str(output), "--resume") == 0  # the slow clip first
    assert "classified 6 videos" in capsys.readouterr().out  # only those not done yet
    records = read_records(output)
    assert [r["video"] for r in records] == clips  # input order, each video once
    assert_same(records, expected)

    # an output FOLDER: Ray's write_json files, nested fields as JSON text
    folder = tmp_path / "preds"
    assert run(recipe, *clips, "--output", str(folder)) == 0
    lines = [json.loads(line) for f in sorted(folder.glob("*.json")) for line in f.read_text().splitlines()]
    assert_same([recipe.record(row) for row in lines], expected)
