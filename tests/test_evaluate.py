"""`vidcls evaluate`: accuracy from the engine's per-video records, label matching before any
decoding, undecodable videos listed but never in an accuracy, the confusion PNG."""

import json
import random

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError
from vidcls.inference import engine
from vidcls.inference.metrics import OTHER, match_labels, summarize
from vidcls.inference.results import read_records
from vidcls.video.synthetic import make_sample_clip
from vidcls.viz.confusion import plot_confusion

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Class folders named after demo-motion's labels, 3 clips each (some hard: tiny and
    short), and one undecodable file."""
    root = tmp_path_factory.mktemp("data")
    for d, direction in enumerate(DIRECTIONS):
        (root / direction).mkdir()
        for i in range(3):
            size = (24, 32) if i == 2 else (72, 96)
            make_sample_clip(root / direction / f"{i}.mp4", direction, frames=6 if i == 2 else 16,
                             height=size[0], width=size[1], seed=10 * d + i)
    (root / "left" / "broken.mp4").write_bytes(b"not a video at all")
    return root


def test_summary_equals_its_own_per_video_output(data, tmp_path):
    out, png = tmp_path / "preds.csv", tmp_path / "cm.png"
    result = runner.invoke(app, ["evaluate", "-m", "demo-motion", "--data", str(data), "-o", str(out),
                                 "--plot", str(png), "--json", "--workers", "0"])
    assert result.exit_code == 1, result.output  # the broken file
    summary = json.loads(result.stdout)
    records = read_records(out)
    assert len(records) == 13
    ok = [r for r in records if not r["error"]]
    assert summary["evaluated"] == len(ok) == 12 and summary["failed_count"] == 1
    assert summary["failed"][0]["video"].endswith("broken.mp4")
    assert summary["top1"] == round(sum(r["top_k"][0]["label"] == r["label"] for r in ok) / len(ok), 6)
    assert summary["top5"] == 1.0  # 4 classes: the truth is always in the top 4
    per_class = {c: sum(r["top_k"][0]["label"] == c for r in ok if r["label"] == c) / 3 for c in DIRECTIONS}
    assert {c: v["accuracy"] for c, v in summary["per_class"].items()} == pytest.approx(per_class)
    assert summary["mean_class_accuracy"] == pytest.approx(sum(per_class.values()) / 4)
    counts = summary["confusion"]["counts"]
    assert [sum(row) for row in counts] == [3, 3, 3, 3]
    assert sum(counts[i][i] for i in range(4)) == round(summary["top1"] * 12)
    with Image.open(png) as image:
        assert image.format == "PNG" and 400 <= image.width <= 1200 and 400 <= image.height <= 1200


def test_unknown_data_label_stops_before_any_decoding(data, tmp_path, monkeypatch):
    listing = tmp_path / "val.txt"
    listing.write_text(f"{data / 'left' / '0.mp4'} left\n{data / 'up' / '0.mp4'} sideways\n")

    def no_decoding(*args):
        raise AssertionError("decoded before the labels were checked")

    monkeypatch.setattr(engine, "decode_views", no_decoding)
    with pytest.raises(UsageError, match="'sideways' is not one of demo-motion's 4 labels"):
        vidcls.evaluate_run("demo-motion", listing, workers=0)
    result = runner.invoke(app, ["evaluate", "-m", "demo-motion", "--data", str(listing)])
    assert result.exit_code == 2 and "sideways" in result.output


def test_label_spellings_and_class_indices_match():
    labels = ["playing guitar", "riding a bike", "abseiling"]
    assert match_labels(["Playing_Guitar", "riding-a-bike"], labels, "m") == {
        "Playing_Guitar": "playing guitar", "riding-a-bike": "riding a bike"}
    assert match_labels(["2", "0"], labels, "m") == {"2": "abseiling", "0": "playing guitar"}
    with pytest.raises(UsageError, match="closest: abseiling"):
        match_labels(["abseilin"], labels, "m")


def test_summary_against_a_count_by_hand_and_a_400_class_plot(tmp_path):
    rng = random.Random(0)
    labels = [f"class {i:03d}" for i in range(400)]
    records = []
    for n in range(2000):
        truth = labels[rng.randrange(400)]
        ranked = rng.sample(labels, 5) if rng.random() < 0.5 else [truth, *rng.sample(labels, 4)]
        records.append({"video": f"v{n}", "label": truth, "error": None,
                        "top_k": [{"label": name, "score": 0.1} for name in ranked]})
    records.append({"video": "bad", "label": labels[0], "error": "could not decode", "top_k": []})
    summary = summarize(records, "m", labels)
    ok = records[:-1]
    assert summary.top1 == round(sum(r["top_k"][0]["label"] == r["label"] for r in ok) / 2000, 6)
    assert summary.top5 == round(sum(r["label"] in [t["label"] for t in r["top_k"]] for r in ok) / 2000, 6)
    assert summary.failed == [{"video": "bad", "error": "could not decode"}] and summary.evaluated == 2000
    matrix = torch.tensor(summary.confusion)
    assert matrix.sum() == 2000 and matrix.trace() == round(summary.top1 * 2000)
    assert summary.to_json()["confusion"]["columns"][-1] == OTHER
    png = tmp_path / "big.png"
    plot_confusion(summary, png)
    with Image.open(png) as image:
        assert 1500 <= image.width <= 2600 and 1500 <= image.height <= 2400


def test_interrupted_evaluation_resumes_and_covers_every_video(data, tmp_path, ctrl_c_after):
    out = tmp_path / "preds.jsonl"
    with pytest.raises(KeyboardInterrupt):
        vidcls.evaluate_run("demo-motion", data, output=out, workers=0, on_result=ctrl_c_after(5))
    resumed = vidcls.evaluate_run("demo-motion", data, output=out, resume=True, workers=0)
    assert resumed.run.resumed == 5 and len(resumed.run.predictions) == 8
    full = vidcls.evaluate_run("demo-motion", data, workers=0)
    assert resumed.summary.to_json() == full.summary.to_json()
    assert len(read_records(out)) == 13
