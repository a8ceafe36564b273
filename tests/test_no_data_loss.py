"""What a run must never do to data (issue 26, items 1-4, 6 and 15): two writers on one output, a
resume that mixes runs or damages a file that is not vidcls's, an output written over an input,
per-video files overwriting each other, a decoder worker's death costing other videos' results,
stdin's spool failing the other inputs, and an output's failure blamed on the input. Real
processes where the failure is between processes (a second `vidcls predict`, a killed worker)."""

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.inference.results import read_records
from vidcls.video.synthetic import make_sample_clip

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's vidcls
PREDICT = [sys.executable, "-m", "vidcls", "predict"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four small clips, one per direction."""
    root = tmp_path_factory.mktemp("clips")
    for i, direction in enumerate(DIRECTIONS):
        make_sample_clip(root / f"{i:02d}-{direction}.mp4", direction, frames=12, height=48, width=64, seed=i)
    return root


@pytest.fixture(scope="module")
def many(clips, tmp_path_factory):
    """40 copies of the clips: a run long enough to be caught in the middle."""
    root = tmp_path_factory.mktemp("many")
    sources = sorted(clips.iterdir())
    for i in range(40):
        shutil.copy(sources[i % 4], root / f"{i:02d}.mp4")
    return root


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines (exit {process.poll()})")


# ----------------------------------------------------------------------------- item 1: one writer per output


# The real command line, each video's decoding slowed down (0.25 s), so that a run lasts while others start.
SLOW = """
import sys, time
import vidcls.inference.engine as engine
decode = engine.decode_views
def slow(position, item, recipe):
    time.sleep(0.25)
    return decode(position, item, recipe)
engine.decode_views = slow
from vidcls.cli import main
sys.argv[0] = "vidcls"
main()
"""


def test_a_second_run_on_the_same_output_is_refused_naming_the_first(clips, tmp_path):
    """The README promises exit 2 when --output is in use: a second `predict -o same.jsonl` (with or
    without --resume, or through a symbolic link to it) is refused naming the first's pid, and the
    first writes every video exactly once."""
    out, link = tmp_path / "same.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(out)
    arguments = [str(clips), str(clips), str(clips), "-m", "demo-motion", "--workers", "0", "--batch-size", "1"]
    first = subprocess.Popen([sys.executable, "-c", SLOW, "predict", *arguments, "-o", str(out)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    command = [*PREDICT, *arguments, "-o", str(out)]
    try:
        wait_for_lines(out, 1, first)
        for second in (command, [*command, "--resume"], [*PREDICT, *arguments, "-o", str(link), "--resume"]):
            done = subprocess.run(second, env=ENV, capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, done.stderr
            assert f"is in use by another vidcls run (pid {first.pid})" in done.stderr, done.stderr
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    videos = [r["video"] for r in read_records(out)]
    assert sorted(videos) == sorted(3 * [str(p) for p in clips.iterdir()])  # each input once, no line garbled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "same.jsonl"]  # the lock is gone
    again = subprocess.run([*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # the lock was let go
    assert "0 classified (0 failed), 12 already there" in again.stderr


# ----------------------------------------------------------------------------- item 2: resume never mixes


def test_resume_refuses_another_model_top_k_or_recipe(clips, tmp_path):
    """Each record says what made it (model and its sha256, top-k, recipe, windows); a resume that
    differs is exit 2 naming the difference, and the file is left as it was."""
    from vidcls.zoo.modeldir import save_model_dir

    out = tmp_path / "preds.jsonl"
    first = [str(clips / "00-left.mp4"), str(clips / "01-right.mp4")]
    vidcls.predict_run(first, "demo-motion", output=out, top_k=3, workers=0)
    runs = [r["run"] for r in read_records(out)]
    assert runs[0] == runs[1] and runs[0]["model"] == "demo-motion" and runs[0]["top_k"] == 3
    before = out.read_bytes()
    loaded = vidcls.load_model("demo-motion")
    with torch.no_grad():
        loaded.module.get_classifier().bias.add_(1.0)
    retrained = save_model_dir(tmp_path / "retrained", loaded.card, loaded.module)  # same name, other weights
    everything = [str(clips)]
    cases = {("--top-k", "2"): "top_k 3 (this run: 2)", ("--clips", "2"): "clips 1 (this run: 2)",
             ("--timeline",): "timeline null (this run: ", ("-m", str(retrained)): "model_sha256 "}
    for extra, named in cases.items():
        model = [] if "-m" in extra else ["-m", "demo-motion"]
        top_k = [] if "--top-k" in extra else ["--top-k", "3"]
        result = runner.invoke(app, ["predict", *everything, *model, *top_k, *extra, "-o", str(out), "--resume",
                                     "--workers", "0"])
        assert result.exit_code == 2, result.output
        assert "holds results of another run" in result.stderr and named in result.stderr, result.stderr
        assert out.read_bytes() == before
    same = runner.invoke(app, ["predict", *everything, "-m", "demo-motion", "--top-k", "3", "-o", str(out),
                               "--resume", "--workers", "0"])
    assert same.exit_code == 0, same.output
    assert sorted(r["video"] for r in read_records(out)) == sorted(str(p) for p in clips.iterdir())


def test_a_csv_resumed_with_a_smaller_top_k_is_refused_not_duplicated(clips, tmp_path):
    """The issue's case: rows of another width were never read back, so every resume added them
    again (20 -> 30 -> 40 rows for 20 videos)."""
    out = tmp_path / "k.csv"
    assert runner.invoke(app, ["predict", str(clips), "-m", "demo-motion", "--top-k", "3", "-o", str(out),
                               "--workers", "0"]).exit_code == 0
    before = out.read_bytes()
    for _ in range(2):
        result = runner.invoke(app, ["predict", str(clips), "-m", "demo-motion", "--top-k", "2", "-o", str(out),
                                     "--resume", "--workers", "0"])
        assert result.exit_code == 2 and "top_k 3 (this run: 2)" in result.stderr, result.output
    assert out.read_bytes() == before and len(read_records(out)) == 4


@pytest.mark.parametrize(("name", "content"), [
    ("mine.json", '[{"name": "my notes", "year": 2024}]\n'),
    ("mine.json", '[\n  {"video": "a.mp4",\n   "pretty": true}\n]\n'),
    ("mine.jsonl", '{"video": "a.mp4", "top_k": []}\nthis line is mine\n'),
    ("mine.csv", "name,age\nann,31\n"),
    ("mine.csv", "video,label_1,score_1,error\na.mp4,left,0.9,\n"),  # another tool's (or an old) layout
])
def test_resume_never_continues_a_file_that_is_not_vidcls_results(clips, tmp_path, name, content):
    """--resume rewrote a .json that was not vidcls output (its records lost) and appended to any
    file: now a file holding anything but vidcls records is exit 2, untouched."""
    out = tmp_path / name
    out.write_text(content)
    result = runner.invoke(app, ["predict", str(clips / "00-left.mp4"), "-m", "demo-motion", "-o", str(out),
                                 "--resume", "--workers", "0"])
    assert result.exit_code == 2, result.output
    assert "is not a file of vidcls results" in result.stderr or "without the settings" in result.stderr
    assert out.read_text() == content


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_symlinked_output_stays_a_symlink(clips, tmp_path, suffix, ctrl_c_after):
    """--resume of a .json replaced the output (atomically) by a plain file: a symbolic link was lost
    and its target kept the old records. Resuming now appends in place, through the link."""
    target = tmp_path / "store" / f"real{suffix}"
    target.parent.mkdir()
    link = tmp_path / f"link{suffix}"
    link.symlink_to(target)
    with pytest.raises(KeyboardInterrupt):
        vidcls.predict_run([clips], "demo-motion", output=link, workers=0, on_result=ctrl_c_after(2))
    vidcls.predict_run([clips], "demo-motion", output=link, workers=0, resume=True)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(r["video"] for r in read_records(target)) == sorted(str(p) for p in clips.iterdir())
    if suffix == ".json":
        assert len(json.loads(target.read_text())) == 4  # a closed array


# ----------------------------------------------------------------------------- item 3: no input overwritten


def test_out_video_or_plot_naming_an_input_is_refused(clips, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(clips / "00-left.mp4", clip)
    before = clip.read_bytes()
    (tmp_path / "alias.mp4").symlink_to(clip)
    for option, path in (("--out-video", clip), ("--out-video", tmp_path / "alias.mp4"), ("--plot", clip)):
        result = runner.invoke(app, ["predict", str(clip), "-m", "demo-motion", option, str(path)])
        assert result.exit_code == 2, result.output
        assert f"{option} {path} is the input {clip}" in result.stderr
        assert clip.read_bytes() == before


def test_same_named_inputs_in_different_folders_get_their_own_files(clips, tmp_path):
    """a/clip.mp4 and b/clip.mp4 both wrote ann-clip.mp4 (and tl-clip.png): the first was lost."""
    pytest.importorskip("matplotlib")
    for folder, source in (("a", "00-left.mp4"), ("b", "01-right.mp4")):
        (tmp_path / folder).mkdir()
        shutil.copy(clips / source, tmp_path / folder / "clip.mp4")
    result = runner.invoke(app, ["predict", str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"),
                                 "-m", "demo-motion", "--out-video", str(tmp_path / "ann.mp4"),
                                 "--plot", str(tmp_path / "tl.png")])
    assert result.exit_code == 0, result.output
    for stem in ("a_clip", "b_clip"):
        assert (tmp_path / f"ann-{stem}.mp4").stat().st_size > 0
        assert (tmp_path / f"tl-{stem}.png").stat().st_size > 0
    assert not (tmp_path / "ann-clip.mp4").exists()


def test_unique_labels_tell_every_video_apart():
    from vidcls.inference.options import TimelineOptions, unique_labels

    names = ["x/a/clip.mp4", "x/b/clip.mp4", "y/a/clip.mp4", "clip.mkv", "clip.mp4", "clip.mp4", "-",
             "https://host/v/clip.mp4", "other.mp4"]
    labels = unique_labels(names)
    assert len(set(labels)) == len(labels)
    assert labels[-1] == "other" and labels[6] == "stdin"
    assert labels[:3] == ["x_a_clip", "b_clip", "y_a_clip"]  # as many folders as it takes, per clash
    assert labels[4:6] == ["clip_mp4", "clip_mp4-2"]
    assert TimelineOptions.paths_for(Path("o/ann.mp4"), ["a/clip.mp4"]) == [Path("o/ann.mp4")]
    assert TimelineOptions.paths_for(Path("o/ann.mp4"), ["a/clip.mp4", "b.mp4"]) == [Path("o/ann-clip.mp4"),
                                                                                    Path("o/ann-b.mp4")]


def test_export_does_not_replace_an_unrelated_file(tmp_path):
    precious = tmp_path / "model.onnx"
    precious.write_bytes(b"my own graph, not vidcls's")
    result = runner.invoke(app, ["export", "demo-motion", "--out", str(precious)])
    assert result.exit_code == 2, result.output
    assert "exists and is not a vidcls export" in result.stderr
    assert precious.read_bytes() == b"my own graph, not vidcls's"


# ----------------------------------------------------------------------------- item 4: worker deaths contained

# Run the real command line in a process whose decoder dies on some videos: the worker of a video named
# *bomb* kills itself with SIGKILL (as the kernel's OOM killer does), one named *segv* segfaults.
DEADLY = """
import ctypes, os, signal, sys
import vidcls.inference.engine as engine
decode = engine.decode_views
def deadly(position, item, recipe):
    if "bomb" in item.name:
        os.kill(os.getpid(), signal.SIGKILL)
    if "segv" in item.name:
        ctypes.string_at(0)
    return decode(position, item, recipe)
engine.decode_views = deadly
from vidcls.cli import main
sys.argv[0] = "vidcls"
main()
"""


@pytest.fixture(scope="module")
def deadly_folder(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("deadly")
    sources = sorted(clips.iterdir())
    for i in range(12):
        name = {3: "03-bomb.mp4", 8: "08-segv.mp4"}.get(i, f"{i:02d}.mp4")
        shutil.copy(sources[i % 4], root / name)
    return root


def test_a_dead_decoder_fails_only_its_video_in_process(deadly_folder, monkeypatch):
    import vidcls.inference.engine as engine

    decode = engine.decode_views

    def deadly(position, item, recipe):  # runs in the forked workers
        if "bomb" in item.name:
            os.kill(os.getpid(), signal.SIGKILL)
        if "segv" in item.name:
            ctypes.string_at(0)
        return decode(position, item, recipe)

    monkeypatch.setattr(engine, "decode_views", deadly)
    results = vidcls.predict([deadly_folder], "demo-motion", device="cpu", workers=2)
    assert [r.video for r in results] == sorted(str(p) for p in deadly_folder.iterdir())  # each once, in order
    errors = {Path(r.video).name: r.error for r in results if r.error}
    assert errors == {"03-bomb.mp4": "the decoding process was killed (SIGKILL, as the kernel's OOM killer "
                                     "sends) while decoding this video",
                      "08-segv.mp4": "the decoder crashed (SIGSEGV) while decoding this video"}
    assert all(r.top_k for r in results if not r.error)


@pytest.mark.slow  # two processes restarting their workers: ~30 s each on a 2-core machine
@pytest.mark.parametrize("mode", ["-o", "--json"])
def test_a_dead_decoder_keeps_every_other_result_on_the_command_line(deadly_folder, tmp_path, mode):
    """The issue: `internal error: ConnectionResetError` with -o (52 of 60 lost until --resume) and
    0 bytes with --json (all lost). Now the two videos whose decoder died fail, one line each."""
    out = tmp_path / "out.jsonl"
    extra = ["-o", str(out)] if mode == "-o" else ["--json"]
    done = subprocess.run([sys.executable, "-c", DEADLY, "predict", str(deadly_folder), "-m", "demo-motion",
                           "--workers", "2", *extra], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {deadly_folder / '03-bomb.mp4'}: the decoding process was killed (SIGKILL, as the kernel's OOM "
        f"killer sends) while decoding this video",
        f"error: {deadly_folder / '08-segv.mp4'}: the decoder crashed (SIGSEGV) while decoding this video"]
    records = read_records(out) if mode == "-o" else json.loads(done.stdout)
    assert [r["video"] for r in records] == sorted(str(p) for p in deadly_folder.iterdir())
    assert sum(1 for r in records if r["error"]) == 2


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow  # 40 videos in a subprocess, a worker restarted: ~30 s each on a 2-core machine
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("mode", ["-o", "--json"])
def test_a_worker_killed_from_outside_mid_run_costs_at_most_its_video(many, tmp_path, mode):
    """What the OOM killer does: SIGKILL to one decoding worker of a running `predict`, from outside."""
    out = tmp_path / "out.jsonl"
    extra = ["-o", str(out)] if mode == "-o" else ["--json"]
    command = [*PREDICT, str(many), "-m", "demo-motion", "--workers", "2", "--batch-size", "1", *extra]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and process.poll() is None and len(workers) < 2:
            workers = children(process.pid)
            time.sleep(0.05)
        time.sleep(0.5)  # decoding is under way
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode in (0, 1), stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    records = read_records(out) if mode == "-o" else json.loads(stdout)
    assert sorted(r["video"] for r in records) == sorted(str(p) for p in many.iterdir())  # each once
    failed = [r["error"] for r in records if r["error"]]
    assert len(failed) <= 1 and all("SIGKILL" in reason for reason in failed)
    assert process.returncode == (1 if failed else 0)


# ----------------------------------------------------------------------------- item 6: stdin


def test_stdin_given_twice_is_a_usage_error(clips):
    """`-` twice spooled stdin twice and reported the second copy empty; stdin holds one video."""
    data = (clips / "00-left.mp4").read_bytes()
    done = subprocess.run([*PREDICT, "-", "-", "-m", "demo-motion"], input=data, env=ENV, capture_output=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert b"input '-' (stdin) is given twice" in done.stderr


def test_a_stdin_spool_that_cannot_be_written_fails_only_stdin(clips, tmp_path):
    """stdin is copied to TMPDIR (decoding seeks); a full TMPDIR lost the good input beside it
    (internal error). A file-size limit makes the copy fail as a full disk does (EFBIG, not ENOSPC)."""
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    good = clips / "00-left.mp4"
    done = subprocess.run([*PREDICT, str(good), "-", "-m", "demo-motion", "--json", "--workers", "0"],
                          input=os.urandom(1 << 18), env={**ENV, "TMPDIR": str(tmp_path)}, capture_output=True,
                          timeout=120, preexec_fn=limited)
    assert done.returncode == 1, done.stderr
    stderr = done.stderr.decode()
    assert "internal error" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: -: cannot keep the video on stdin in {tmp_path} (TMPDIR): File too large"]
    rows = json.loads(done.stdout)
    assert [r["video"] for r in rows] == [str(good), "-"]
    assert rows[0]["top_k"][0]["label"] == "left"
    assert list(tmp_path.iterdir()) == []  # the partial copy is gone


# ----------------------------------------------------------------------------- item 15: output failures


@pytest.mark.parametrize("option", ["--out-video", "--plot"])
def test_an_output_that_cannot_be_written_is_blamed_on_the_output(clips, tmp_path, option):
    """Was `clip.mp4: decoding failed: Permission denied`, the input blamed (exit 1 after the
    model ran). Now refused before any video is decoded, naming the option (exit 2). A regular file
    where a folder belongs fails for root too, which permissions do not."""
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    target = blocker / "sub" / ("x.mp4" if option == "--out-video" else "x.png")
    result = runner.invoke(app, ["predict", str(clips / "00-left.mp4"), "-m", "demo-motion", option, str(target)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {option} {target}: {blocker} is not a folder"
