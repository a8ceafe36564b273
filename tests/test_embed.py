"""vidcls embed: vectors equal to the classifier's input computed by hand, per video, per view and
per window, in input order with bad files among them; outputs (.jsonl, .json, .npy + index)
streamed, resumed after Ctrl-C or a kill, sharded and merged under torchrun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.inference.embed import embedding_dim, pre_logits
from vidcls.inference.results import read_records
from vidcls.inference.timeline import plan_windows
from vidcls.inference.vectors import HEADER_BYTES, NpyRows, index_path
from vidcls.video.decode import load_clips, probe, read_frames
from vidcls.video.encode import write_video
from vidcls.video.inputs import gather
from vidcls.video.synthetic import ShapeClipSpec, make_sample_clip, render_path
from vidcls.video.transforms import eval_views

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's vidcls
BAD = ("03b-broken.mp4", "05b-empty.mkv")


@pytest.fixture(scope="module")
def model():
    return vidcls.load_model("demo-motion", device="cpu")


@pytest.fixture(scope="module")
def random_ff_linear():
    """A family whose pre-logits are not its pooled tokens (a hidden Linear + GELU before the head)."""
    torch.manual_seed(0)
    return vidcls.load_model("ff-linear-tiny", device="cpu", allow_random=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six small clips and, between them, two broken videos and a file that is not a video."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(6):
        make_sample_clip(root / f"{i:02d}-{DIRECTIONS[i % 4]}.mp4", DIRECTIONS[i % 4], frames=12,
                         height=48, width=64, seed=i)
    (root / BAD[0]).write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    (root / BAD[1]).write_bytes(b"")
    (root / "readme.txt").write_text("not a video\n")
    return root


def classifier_inputs(model, views: torch.Tensor) -> torch.Tensor:
    """The obviously-correct reference: run the whole model on the views and catch what its
    final Linear receives (the definition of pre-logits), one row per view."""
    caught = []
    hook = model.module.get_classifier().register_forward_pre_hook(lambda _, args: caught.append(args[0]))
    try:
        with torch.inference_mode():
            model.module(views)
    finally:
        hook.remove()
    return caught[0]


def by_hand(path: Path, model, clips: int | None = None, crops: int | None = None) -> torch.Tensor:
    """(views, dim): whole clips decoded, views cut as for predict, the classifier's input per view."""
    spec = model.card.input
    decoded, _ = load_clips(path, spec.frames, spec.stride, clips or spec.clips, spec.sampling)
    views = eval_views(decoded, spec.size, crops or spec.crops, spec.mean, spec.std, spec.resize, spec.aspect)
    return classifier_inputs(model, views)


def names(folder: Path) -> list[str]:
    return [v.name for v in gather([folder]).videos]


@pytest.mark.parametrize("settings", [dict(workers=0, batch_size=1), dict(workers=2, batch_size=5)])
@pytest.mark.parametrize("which", ["model", "random_ff_linear"])
def test_vectors_are_the_classifier_input_averaged_over_views_in_input_order(folder, which, settings, request):
    model = request.getfixturevalue(which)
    run = vidcls.embed_run([folder], model, device="cpu", clips=2, crops=3, **settings)
    assert [e.video for e in run.embeddings] == names(folder)
    assert run.meta["dim"] == model.module.get_classifier().in_features
    for embedding in run.embeddings:
        if Path(embedding.video).name in BAD:
            assert embedding.error and embedding.vectors is None
            assert embedding.to_json(run.meta)["embedding"] is None
            continue
        assert embedding.error is None
        expected = by_hand(Path(embedding.video), model, clips=2, crops=3)
        assert expected.shape == (6, run.meta["dim"])
        torch.testing.assert_close(embedding.vectors, expected.mean(0), atol=1e-5, rtol=0)


def test_views_all_keeps_each_view_and_its_logits_give_predicts_scores(folder, model):
    good = [folder / f"{i:02d}-{DIRECTIONS[i % 4]}.mp4" for i in range(3)]
    embeddings = vidcls.embed(good, model, device="cpu", workers=0, views="all", clips=2, crops=3, batch_size=4)
    predictions = vidcls.predict(good, model, device="cpu", workers=0, clips=2, crops=3, top_k=4)
    head = model.module.get_classifier()
    for embedding, prediction, path in zip(embeddings, predictions, good, strict=True):
        assert embedding.vectors.shape == (6, 64)
        torch.testing.assert_close(embedding.vectors, by_hand(path, model, clips=2, crops=3), atol=1e-5, rtol=0)
        with torch.inference_mode():
            probs = head(embedding.vectors).softmax(-1).mean(0)
        assert [t["score"] for t in prediction.top_k] == pytest.approx(probs.sort(descending=True).values.tolist(),
                                                                         abs=1e-5)


def test_normalize_gives_the_unit_mean(folder, model):
    clip = folder / "00-left.mp4"
    plain, = vidcls.embed([clip], model, device="cpu", workers=0, crops=3)
    unit, = vidcls.embed([clip], model, device="cpu", workers=0, crops=3, normalize=True)
    per_view, = vidcls.embed([clip], model, device="cpu", workers=0, crops=3, normalize=True, views="all")
    torch.testing.assert_close(unit.vectors, plain.vectors / plain.vectors.norm(), atol=1e-6, rtol=0)
    torch.testing.assert_close(per_view.vectors.norm(dim=1), torch.ones(3), atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """6 s at 8 fps: left for 3 s, then up for 3 s."""
    spec = ShapeClipSpec("left", height=48, width=48, size=(10.0, 10.0), speed=0.6, start=(30.0, 40.0),
                         shape="square", color=(250, 200, 40), background=(20, 30, 60), noise=4.0)
    path = tmp_path_factory.mktemp("long") / "left-then-up.mp4"
    write_video(path, render_path(spec, [("left", 24), ("up", 24)]), fps=8)
    return path


def test_timeline_gives_each_window_its_vectors_and_span(long_clip, model):
    spec = model.card.input
    info = probe(long_clip)
    windows = plan_windows(info.num_frames, info.fps, spec, 2.0, 1.0, clips=1)
    mean, = vidcls.embed([long_clip], model, device="cpu", timeline=True, window_s=2.0, hop_s=1.0, batch_size=3)
    every, = vidcls.embed([long_clip], model, device="cpu", window_s=2.0, hop_s=1.0, views="all", crops=3)
    assert mean.vectors.shape == (len(windows), 64) and every.vectors.shape == (len(windows), 3, 64)
    assert mean.spans == [(w.start_s, w.end_s) for w in windows] and len(windows) == 5
    record = mean.to_json({})
    assert [(t["start_s"], t["end_s"]) for t in record["timeline"]] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0),
                                                                          (3.0, 5.0), (4.0, 6.0)]
    for k, window in enumerate(windows):
        frames = read_frames(long_clip, window.indices)[None]  # (1 clip, T, H, W, 3)
        views = eval_views(frames, spec.size, 3, spec.mean, spec.std, spec.resize, spec.aspect)
        expected = classifier_inputs(model, views)
        torch.testing.assert_close(every.vectors[k], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(mean.vectors[k], classifier_inputs(model, views[1:2])[0], atol=1e-5, rtol=0)
    # a window as long as the video is the whole video's vector
    whole, = vidcls.embed([long_clip], model, device="cpu", workers=0)
    once, = vidcls.embed([long_clip], model, device="cpu", window_s=60.0)
    torch.testing.assert_close(once.vectors[0], whole.vectors, atol=1e-5, rtol=0)


def test_timeline_failure_is_the_videos_error(folder, model):
    results = vidcls.embed([folder / BAD[0], folder / "00-left.mp4"], model, device="cpu", timeline=True)
    assert results[0].error and results[0].vectors is None and results[0].spans == []
    assert results[1].error is None and results[1].vectors.shape[1] == 64


def test_binary_output_opens_with_numpy_and_pandas_and_equals_the_jsonl(folder, tmp_path):
    pandas = pytest.importorskip("pandas")
    options = dict(device="cpu", workers=0, views="all", crops=3)
    jsonl = vidcls.embed_run([folder], "demo-motion", output=tmp_path / "e.jsonl", **options)
    npy = vidcls.embed_run([folder], "demo-motion", output=tmp_path / "e.npy", **options)
    as_json = vidcls.embed_run([folder], "demo-motion", output=tmp_path / "e.json", **options)
    assert all(e.vectors is None for e in jsonl.embeddings + npy.embeddings)  # in the file, not in memory
    lines = read_records(tmp_path / "e.jsonl")
    same = ("video", "model", "frames_used", "error", "warnings", "meta")  # all but the vectors and timings
    array = json.loads((tmp_path / "e.json").read_text())
    assert [{k: r[k] for k in (*same, "embedding")} for r in array] == [{k: r[k] for k in (*same, "embedding")}
                                                                        for r in lines]
    assert len(as_json.embeddings) == len(lines)
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (6 * 3, 64)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy", mmap_mode="r"), vectors)
    index = pandas.read_json(tmp_path / "e.index.jsonl", lines=True)
    assert list(index.video) == [r["video"] for r in lines] == names(folder)
    assert index.meta[0] == lines[0]["meta"] and index.meta[0]["dim"] == 64 and index.meta[0]["views"] == "all"
    index_records = read_records(tmp_path / "e.index.jsonl")
    for line, record, (_, row) in zip(lines, index_records, index.iterrows(), strict=True):
        assert {k: line[k] for k in same} == {k: record[k] for k in same}
        if line["error"]:
            assert line["embedding"] is None and row.rows == 0 and pandas.isna(row.row)
            continue
        rows = vectors[int(row.row):int(row.row) + row.rows]
        np.testing.assert_array_equal(rows, np.asarray(line["embedding"], np.float32))
    ok = index[index.error.isna()]  # the vectors are the rows of the videos without an error, in order
    assert list(ok.row.astype(int)) == list(np.cumsum([0, *ok.rows[:-1]])) and ok.rows.sum() == len(vectors)


@pytest.mark.parametrize("suffix", [".npy", ".jsonl"])
def test_interrupted_and_torn_outputs_resume_each_video_once(folder, tmp_path, suffix, ctrl_c_after):
    out = tmp_path / f"e{suffix}"
    reference = {e.video: e for e in vidcls.embed([folder], "demo-motion", device="cpu", workers=0)}
    with pytest.raises(KeyboardInterrupt):
        vidcls.embed_run([folder], "demo-motion", device="cpu", workers=2, output=out, on_result=ctrl_c_after(3))
    records = out if suffix == ".jsonl" else index_path(out)
    assert len(read_records(records)) == 3
    # then killed while writing the 4th video: rows without their index line, and a torn line
    if suffix == ".npy":
        with out.open("ab") as f:
            f.write(np.ones((2, 64), np.float32).tobytes())
    with records.open("a") as f:
        f.write('{"video": "torn')
    with pytest.raises(UsageError, match="--resume"):
        vidcls.embed_run([folder], "demo-motion", device="cpu", workers=0, output=out)
    with pytest.raises(UsageError, match="other settings"):
        vidcls.embed_run([folder], "demo-motion", device="cpu", workers=0, output=out, resume=True, crops=3)
    resumed = vidcls.embed_run([folder], "demo-motion", device="cpu", workers=0, output=out, resume=True)
    assert resumed.resumed == 3 and len(resumed.embeddings) == 5
    assert_each_once_and_equal(out, reference)


def assert_each_once_and_equal(out: Path, reference: dict) -> None:
    """Every video of `reference` exactly once in `out`, with its vectors (and errors) as computed in one go."""
    if out.suffix == ".npy":
        vectors, records = np.load(out), read_records(index_path(out))
        assert len(vectors) == sum(r["rows"] for r in records)
        got = {r["video"]: None if r["row"] is None else vectors[r["row"]:r["row"] + r["rows"]] for r in records}
    else:
        records = read_records(out)
        got = {r["video"]: None if r["embedding"] is None else np.asarray(r["embedding"], np.float32)
               for r in records}
    assert sorted(r["video"] for r in records) == sorted(reference)
    for video, embedding in reference.items():
        if embedding.error:
            assert got[video] is None
        else:
            np.testing.assert_allclose(got[video].reshape(-1), embedding.vectors.numpy(), atol=1e-5, rtol=0)


def test_sigint_then_resume_from_the_command_line(folder, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(24):
        shutil.copy(folder / f"{i % 6:02d}-{DIRECTIONS[i % 6 % 4]}.mp4", many / f"{i:02d}.mp4")
    out = tmp_path / "out.npy"
    command = [sys.executable, "-m", "vidcls", "embed", str(many), "-m", "demo-motion", "-o", str(out),
               "--batch-size", "1"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if index_path(out).exists() and index_path(out).read_text().count("\n") >= 2:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.01)
    _, stderr = process.communicate(timeout=120)
    first = read_records(index_path(out))
    assert len(first) >= 2
    if len(first) < 24:
        assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    done = subprocess.run(command + ["--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reference = {e.video: e for e in vidcls.embed([many], "demo-motion", device="cpu", workers=0)}
    assert_each_once_and_equal(out, reference)


def test_shards_are_disjoint_and_complete(folder, tmp_path):
    whole = {e.video: e for e in vidcls.embed([folder], "demo-motion", device="cpu", workers=0)}
    parts = [vidcls.embed_run([folder], "demo-motion", device="cpu", workers=0, shard=f"{i}/3",
                              output=tmp_path / f"part{i}.npy") for i in range(3)]
    videos = [r["video"] for i in range(3) for r in read_records(tmp_path / f"part{i}.index.jsonl")]
    assert sorted(videos) == sorted(whole) and len(set(videos)) == len(videos)
    assert all(p.total == len(whole) for p in parts)
    for i in range(3):
        vectors = np.load(tmp_path / f"part{i}.npy")
        for r in read_records(tmp_path / f"part{i}.index.jsonl"):
            if r["row"] is not None:
                np.testing.assert_allclose(vectors[r["row"]], whole[r["video"]].vectors.numpy(), atol=1e-5, rtol=0)


def test_torchrun_two_processes_merge_the_npy_in_input_order(folder, tmp_path):
    out = tmp_path / "merged.npy"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "vidcls", "embed", str(folder), "-m", "demo-motion",
                           "-o", str(out), "--workers", "0", "--device", "cpu"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # two inputs are broken, the rest embedded
    assert [r["video"] for r in read_records(index_path(out))] == names(folder)
    assert_each_once_and_equal(out, {e.video: e for e in vidcls.embed([folder], "demo-motion", device="cpu",
                                                                      workers=0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.index.jsonl", "merged.npy"]


def test_npy_rows_cut_a_killed_runs_extra_rows_and_refuse_a_short_file(tmp_path):
    path = tmp_path / "v.npy"
    rows = NpyRows(path, 4)
    assert rows.append(np.arange(8, dtype=np.float32).reshape(2, 4)) == 0
    assert rows.append(np.full((1, 4), 9, np.float32)) == 2
    rows.close()
    np.testing.assert_array_equal(np.load(path)[2], [9, 9, 9, 9])
    again = NpyRows(path, 4, keep=2)  # the index names two rows: the third is cut
    again.close()
    assert np.load(path).shape == (2, 4) and path.stat().st_size == HEADER_BYTES + 2 * 16
    with pytest.raises(VidclsError, match="holds 2 vectors but its index names 3"):
        NpyRows(path, 4, keep=3)
    with pytest.raises(UsageError, match="not an embed file of 8-dim"):
        NpyRows(path, 8, keep=1)


def test_the_command_line(folder, tmp_path, monkeypatch):
    clip = str(folder / "00-left.mp4")
    result = runner.invoke(app, ["embed", clip, str(folder / BAD[0]), "-m", "demo-motion", "--json",
                                 "--views", "all", "--crops", "3"])
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert [len(r["embedding"] or []) for r in records] == [3, 0] and records[1]["error"]
    assert records[0]["meta"]["ref"] == "demo-motion" and records[0]["meta"]["vidcls"]
    over_time = runner.invoke(app, ["embed", clip, "-m", "demo-motion", "--json", "--window", "0.2", "--hop", "0.1"])
    assert over_time.exit_code == 0, over_time.output
    record, = json.loads(over_time.stdout)
    assert len(record["embedding"]) == len(record["timeline"]) > 1 and len(record["embedding"][0]) == 64
    assert record["meta"]["timeline"] == {"window_s": 0.2, "hop_s": 0.1}
    monkeypatch.chdir(folder)
    table = runner.invoke(app, ["embed", "00-left.mp4", "-m", "demo-motion"])
    assert table.exit_code == 0 and "00-left.mp4" in table.stdout and "64" in table.stdout
    for args, message in ((["-o", str(tmp_path / "x.csv")], ".csv"), (["--views", "some"], "--views"),
                          (["--json", "-o", str(tmp_path / "x.jsonl")], "--json")):
        refused = runner.invoke(app, ["embed", clip, "-m", "demo-motion", *args])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output


@pytest.mark.parametrize("name", ["joint-tiny", "ff-linear-tiny", "xvit-tiny", "vidtr-tiny", "c-vidtr-tiny",
                                  "divided-tiny"])
def test_the_announced_dim_is_every_familys_vector_length(name):
    model = vidcls.load_model(name, device="cpu", allow_random=True)
    spec = model.card.input
    with torch.inference_mode():
        vectors = pre_logits(model.module, torch.randn(2, 3, spec.frames, spec.size, spec.size))
    assert vectors.shape == (2, embedding_dim(model))


def test_a_model_without_pre_logits_is_refused_before_decoding(model, tmp_path):
    class LogitsOnly(torch.nn.Module):  # what zoo.onnx.OnnxModule is: a callable giving logits
        def forward(self, x):
            return model.module(x)

    onnx_like = vidcls.LoadedModel(model.card, LogitsOnly(), None)
    with pytest.raises(UsageError, match="pre-logits.*ONNX"):
        vidcls.embed_run([tmp_path / "missing.mp4"], onnx_like, device="cpu")
    with pytest.raises(TypeError, match="top_k"):
        vidcls.embed([tmp_path], model, top_k=3)


def test_embed_refuses_another_runtime():
    """A converted OpenVINO graph gives logits only: embed says so instead of quietly running torch."""
    from vidcls.errors import UsageError

    with pytest.raises(UsageError, match="embed runs on torch"):
        vidcls.embed_run(["nothing.mp4"], "demo-motion", runtime="openvino")
