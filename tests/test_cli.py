"""End-to-end command line: output formats, exit codes and one-line errors that keep other results."""

import json
import struct
import zlib

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from vidcls.cli import app
from vidcls.synthetic import make_sample_clip

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def good_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return [make_sample_clip(root / "left.mp4", direction="left", seed=1),
            make_sample_clip(root / "up.mp4", direction="up", frames=24, height=64, width=48, seed=2)]


def write_audio_only(path):
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_png(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([200, 30, 30] * 8) for _ in range(8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, good_clips):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = good_clips[0].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_audio_only(root / "audio.m4a")
    (root / "notes.txt").write_text("this is not a video\n")
    write_png(root / "image.png")
    return [root / n for n in ("empty.mp4", "random.mp4", "truncated.mp4", "audio.m4a", "notes.txt",
                               "image.png", "missing.mp4")]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("vidcls ")


def test_models_json_lists_the_zoo():
    result = invoke("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    names = {row["name"] for row in rows}
    assert {"demo-motion", "joint", "joint-tiny"} <= names
    for row in rows:
        assert {"name", "family", "attention", "frames", "size", "weights", "labels"} <= set(row)


def test_models_table():
    result = invoke("models")
    assert result.exit_code == 0 and "demo-motion" in result.stdout


def test_predict_table_and_json(good_clips):
    table = invoke("predict", *good_clips, "--model", "demo-motion", "--top-k", "2")
    assert table.exit_code == 0, table.output
    assert "left" in table.stdout and "up" in table.stdout
    result = invoke("predict", *good_clips, "--model", "demo-motion", "--json", "--clips", "2", "--crops", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["video"] for r in rows] == [str(p) for p in good_clips]
    assert [r["top_k"][0]["label"] for r in rows] == ["left", "up"]
    assert rows[0]["frames_used"] == 2 * 8 and rows[0]["error"] is None
    assert set(rows[0]["top_k"][0]) == {"label", "index", "score"}
    assert len(rows[0]["top_k"]) == 4  # top-k defaults to 5, capped by the 4 classes


def test_predict_directory_input(good_clips):
    result = invoke("predict", good_clips[0].parent, "--model", "demo-motion", "--json")
    assert result.exit_code == 0
    assert sorted(r["video"] for r in json.loads(result.stdout)) == sorted(str(p) for p in good_clips)


def test_each_bad_input_is_one_line_and_keeps_good_results(good_clips, bad_inputs):
    result = invoke("predict", good_clips[0], *bad_inputs, good_clips[1], "--model", "demo-motion", "--json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["video"] for r in rows] == [str(p) for p in [good_clips[0], *bad_inputs, good_clips[1]]]
    assert rows[0]["top_k"] and rows[-1]["top_k"]
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == len(bad_inputs)
    for bad, row, line in zip(bad_inputs, rows[1:-1], error_lines):
        assert row["top_k"] == [] and row["error"]
        assert str(bad) in line and line.startswith("error:")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("index", range(7))
def test_each_bad_input_alone_exits_1(bad_inputs, index):
    result = invoke("predict", bad_inputs[index], "--model", "demo-motion")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad_inputs[index]) in result.stderr


def test_unknown_model_exits_2_suggesting_the_closest_name(good_clips):
    result = invoke("predict", good_clips[0], "--model", "demo-motoin")
    assert result.exit_code == 2
    assert "did you mean demo-motion" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_flag_value_exits_2(good_clips):
    assert invoke("predict", good_clips[0], "--model", "demo-motion", "--top-k", "0").exit_code == 2
    assert invoke("predict", good_clips[0], "--model", "demo-motion", "--device", "cuda:0").exit_code in (0, 2)
    assert invoke("predict", good_clips[0], "--model", "demo-motion", "--precision", "fp8").exit_code == 2


def test_architecture_only_model_is_refused_for_predict(good_clips):
    result = invoke("predict", good_clips[0], "--model", "joint-tiny")
    assert result.exit_code == 2 and "--weights" in result.stderr


def test_sample_clip_command(tmp_path):
    result = invoke("sample-clip", tmp_path / "clip.mp4", "--direction", "down")
    assert result.exit_code == 0 and (tmp_path / "clip.mp4").stat().st_size > 0
    assert invoke("sample-clip", tmp_path / "x.mp4", "--direction", "sideways").exit_code == 2


def test_error_lines_keep_square_brackets(tmp_path):
    """File names are printed verbatim, not read as rich markup."""
    missing = tmp_path / "[red]clip.mp4"
    result = invoke("predict", missing, "--model", "demo-motion")
    assert result.exit_code == 1 and "[red]clip.mp4" in result.stderr
