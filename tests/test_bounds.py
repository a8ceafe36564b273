"""Reliability, round 3 (issue 26, items 7-14 and 16): time, memory and disk bounded; hostile values
refused in one line.

Every case that could eat the machine if its fix broke (a forged header, an alias bomb, an endless
download) runs in a subprocess under an address-space limit and a timeout, so a regression fails
the test instead of taking the machine down. Network cases talk only to a server on 127.0.0.1
that the test starts.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from http_helpers import QuietHandler, local_server
from vidcls.cli import app
from vidcls.video.inputs import gather

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def limited(code: str, *, memory: int = 4 * GIB, timeout: float = 120, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python under an address-space limit (RLIMIT_AS) and a timeout: a
    regression that grows memory without bound dies there (MemoryError, or killed) and one that
    hangs is stopped, so the test fails instead of the machine."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def vidcls_cli(*args: str, memory: int = 4 * GIB, timeout: float = 120, env: dict | None = None,
               stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m vidcls ARGS` under the same limits; stdout and stderr as text."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    done = subprocess.run([sys.executable, "-m", "vidcls", *args], capture_output=True, timeout=timeout,
                          preexec_fn=cap, input=stdin, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------- 7: folders that link to themselves


def test_folder_linking_to_itself_lists_each_video_once(tmp_path):
    root = tmp_path / "videos"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("top.mp4", "a/x.mp4", "a/b/y.mp4"):
        (root / name).write_bytes(b"0")
    (root / "a" / "self").symlink_to(".")          # a loop on itself
    (root / "a" / "b" / "up").symlink_to("../..")  # a loop two levels up
    (root / "a" / "b" / "again").symlink_to("..")  # a second loop: the case that never ended
    (root / "alias").symlink_to("a")               # the same folder under two names
    code = f"""
        from vidcls.video.inputs import gather
        print(len(gather([{str(root)!r}]).videos))
    """
    done = limited(code, memory=2 * GIB, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == 3
    assert [Path(v.name).relative_to(root).as_posix() for v in gather([root]).videos] == \
        ["a/b/y.mp4", "a/x.mp4", "top.mp4"]


def test_a_linked_folder_outside_is_still_searched(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "clip.mp4").write_bytes(b"0")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "link").symlink_to(tmp_path / "elsewhere")
    assert [v.name for v in gather([tmp_path / "videos"]).videos] == [str(tmp_path / "videos" / "link" / "clip.mp4")]


# ----------------------------------------------------------------------------- 12: benchmark under `ulimit -v`


def test_benchmark_point_runs_under_an_address_space_limit():
    """`ulimit -v` sets a hard limit; the isolated point used to ask for a soft limit above it
    ("current limit exceeds maximum limit") and failed on every point."""
    code = """
        from vidcls.bench.measurement import RunSettings, measure_isolated
        from vidcls.bench.models import BenchModel
        arch = {"num_classes": 4, "num_frames": 4, "img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 1,
                "num_heads": 2}
        point = measure_isolated(BenchModel("tiny", "joint", arch, frames=4, size=16), 4, 16,
                                 RunSettings(warmup=0, repeats=1, threads=1, precision="fp32"))
        print("error" if point.error else "ok", point.error)
    """
    done = limited(code, memory=6 * GIB, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.stdout + done.stderr)[-2000:]


def test_address_cap_never_exceeds_a_limit_already_set():
    from resource import RLIM_INFINITY

    from vidcls.bench.measurement import address_cap

    assert address_cap(8 * GIB, RLIM_INFINITY, RLIM_INFINITY) == 8 * GIB
    assert address_cap(8 * GIB, 6 * GIB, 6 * GIB) == 6 * GIB
    assert address_cap(2 * GIB, 3 * GIB, 6 * GIB) == 2 * GIB


# ----------------------------------------------------------------------------- 13 and 10: exported graphs


DEMO_CARD = json.loads((ROOT / "vidcls" / "assets" / "demo-motion" / "config.json").read_text())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from vidcls.video.synthetic import make_sample_clip

    return make_sample_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=8, height=48, width=64)


@pytest.mark.parametrize("classes, card_labels, problem", [
    (3, None, "its card names 4 labels but the graph outputs 3 classes"),   # was: exit 0, fewer scores than labels
    (6, None, "its card names 4 labels but the graph outputs 6 classes"),   # was: internal error: IndexError
    (4, 2, "has 2 labels but a head of 4 classes"),                          # was: internal error: IndexError
])
def test_onnx_labels_that_disagree_with_the_outputs_are_refused_on_load(classes, card_labels, problem, clip, tmp_path):
    from onnx_graphs import tiny_onnx

    card = dict(DEMO_CARD)
    if card_labels is not None:
        card["id2label"] = {str(i): f"label-{i}" for i in range(card_labels)}
    model = tiny_onnx(tmp_path / "model.onnx", card, classes)
    result = runner.invoke(app, ["predict", str(clip), "-m", str(model), "--json", "--workers", "0"])
    assert result.exit_code == 1 and problem in result.stderr, result.output
    assert "internal error" not in result.output and result.stdout.strip() in ("", "[]")


def test_an_onnx_graph_that_loops_forever_is_stopped_per_batch(clip, tmp_path):
    """A Loop of 10^12 iterations hung predict; ONNX Runtime's RunOptions.terminate stops the pass."""
    from onnx_graphs import tiny_onnx

    tiny_onnx(tmp_path / "fine.onnx", DEMO_CARD, 4)
    slow = tiny_onnx(tmp_path / "slow.onnx", DEMO_CARD, 4, loop_trips=10**12)
    done = vidcls_cli("predict", str(clip), "-m", str(slow), "--json", "--workers", "0",
                      env={"VIDCLS_RUN_TIMEOUT": "1"}, timeout=90)
    assert done.returncode == 1, done.stderr[-2000:]
    assert error_lines(done.stderr) == [f"error: {clip}: model failed: the ONNX graph ran longer than 1 s on one "
                                        f"batch and was stopped (VIDCLS_RUN_TIMEOUT sets the limit)"]
    assert "\x1b[" not in done.stderr  # ONNX Runtime's own coloured log line is not printed
    fine = runner.invoke(app, ["predict", str(clip), "-m", str(tmp_path / "fine.onnx"), "--json", "--workers", "0"])
    assert fine.exit_code == 0, fine.output


# ----------------------------------------------------------------------------- a hostile HTTP server on 127.0.0.1

SERVER_CAP = 256 << 20  # the most any response below sends, whatever happens: a regression cannot fill the disk


class HostileHandler(QuietHandler):
    """/endless: bytes without end (no Content-Length); /liar: Content-Length 10^15; /drip: one byte
    every 2 s; /head+drip: the server's `head` bytes, then one byte every 2 s; /video+junk: a valid
    video then bytes without end (a query string names another input with the same answer). Every response
    stops at SERVER_CAP; `requested` lists the paths asked for."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        video: bytes = self.server.video
        self.send_response(200)
        if self.path == "/liar.pth":
            self.send_header("Content-Length", str(10**15))
        self.end_headers()
        head, chunk, pause = {"/drip.mp4": (b"", b"\0", 2.0), "/head+drip.mp4": (self.server.head, b"\0", 2.0),
                              "/video+junk.mp4": (video, b"\0" * 65536, 0.0)}.get(self.path.split("?")[0],  # ?N: same
                                                                                   (b"", b"\0" * 65536, 0.0))
        self.server.requested.append(self.path)
        sent = 0
        try:
            self.wfile.write(head)
            while sent < SERVER_CAP:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                time.sleep(pause)
        except OSError:  # the client hung up: what a bounded client does
            pass


@pytest.fixture
def hostile_server(clip):
    with local_server(HostileHandler, video=clip.read_bytes(), head=b"", requested=[]) as httpd:
        yield httpd


@pytest.fixture
def hostile(hostile_server):
    return f"http://127.0.0.1:{hostile_server.server_address[1]}"


# ----------------------------------------------------------------------------- 9: downloads are bounded


TINY_ARCH = {"num_classes": 2, "num_frames": 4, "img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 1,
             "num_heads": 2}


@pytest.fixture
def url_zoo(tmp_path, monkeypatch):
    """zoo(url, **weights) -> the name of a user zoo entry whose weights are at `url`; network mode, fresh cache."""
    from huggingface_hub import constants

    from vidcls.zoo import hub

    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hub.unreachable.cache_clear()

    def zoo(url: str, **weights) -> str:
        entry = {"family": "joint", "attention": "quadratic", "arch": TINY_ARCH, "input": {"frames": 4, "size": 16},
                 "weights": {"url": url, "layout": "vidcls", **weights}, "labels": ["a", "b"]}
        (tmp_path / "zoo.yaml").write_text(json.dumps({"models": {"remote": entry}}))
        monkeypatch.setenv("VIDCLS_ZOO", str(tmp_path / "zoo.yaml"))
        return "remote"

    yield zoo
    hub.unreachable.cache_clear()


def downloads(tmp_path) -> list[Path]:
    return [p for p in (tmp_path / "home" / "downloads").rglob("*") if p.is_file()]


@pytest.mark.parametrize("path, weights, problem", [
    ("/endless.pth", {}, "the server sent more than the 67,422,240 bytes"),  # bound from the architecture
    ("/endless.pth", {"size": 5000}, "the server sent more than the 5,000 bytes"),  # the entry's own size
    ("/liar.pth", {}, "the server announces 1,000,000,000,000,000 bytes"),     # refused before the first byte
])
def test_a_download_that_would_not_end_is_stopped_and_its_partial_dropped(path, weights, problem, hostile, url_zoo,
                                                                        tmp_path):
    """An endless body filled the disk (41.5 GB in 120 s) and the partial was kept."""
    name = url_zoo(hostile + path, **weights)
    result = runner.invoke(app, ["download", name])
    assert result.exit_code == 1 and problem in " ".join(result.output.split()), result.output
    assert "internal error" not in result.output and len(error_lines(result.output)) == 1
    assert downloads(tmp_path) == []  # nothing kept: it could not be resumed


def test_a_full_disk_drops_the_partial(hostile, url_zoo, tmp_path, monkeypatch):
    from collections import namedtuple

    from vidcls.zoo import bounded

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(bounded.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1 << 20))
    result = runner.invoke(app, ["download", url_zoo(hostile + "/endless.pth")])
    assert result.exit_code == 1 and "is full" in result.output, result.output
    assert downloads(tmp_path) == []


# ----------------------------------------------------------------------------- 10: network inputs, FIFOs, file://


def test_network_inputs_have_a_whole_input_deadline_and_do_not_hold_the_others(hostile, clip):
    """A server dripping one byte every 2 s (each read within the 30 s timeout) and a valid video
    followed by bytes without end both hung predict; with a 4 s deadline each fails in one line and
    the clip beside them is classified."""
    inputs = [f"{hostile}/drip.mp4", str(clip), f"{hostile}/video+junk.mp4"]
    start = time.monotonic()
    done = vidcls_cli("predict", *inputs, "-m", "demo-motion", "--json", "--workers", "0", "--top-k", "1",
                      env={"VIDCLS_NETWORK_DEADLINE": "4"}, timeout=150)
    took = time.monotonic() - start
    rows = json.loads(done.stdout)
    assert done.returncode in (0, 1) and [r["video"] for r in rows] == inputs, done.stderr[-2000:]
    assert rows[1]["error"] is None and rows[1]["top_k"][0]["label"] == "left"
    assert rows[0]["error"] and "VIDCLS_NETWORK_DEADLINE" in rows[0]["error"], rows[0]
    assert rows[2]["error"] is None or "VIDCLS_NETWORK_DEADLINE" in rows[2]["error"], rows[2]
    assert len(error_lines(done.stderr)) == sum(1 for r in rows if r["error"]) and "internal error" not in done.stderr
    assert took < 120, took  # the deadlines, not the server's 256 MiB or its 2 s per byte


def stopped_while_dripping(server, args: list[str], *, requests: int, stop: int):
    """Run `vidcls ARGS`, send it `stop` once `requests` of its inputs hang on the dripping `server` (ffmpeg
    has their first bytes and waits in its read for the next); the finished process, and the seconds it
    took to stop."""
    process = subprocess.Popen([sys.executable, "-m", "vidcls", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        started = time.monotonic()
        while len(server.requested) < requests and process.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.05)
        time.sleep(1.0)
        process.send_signal(stop)
        stopping = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
        took = time.monotonic() - stopping
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), took
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("stop, stalls, command", [
    (signal.SIGTERM, "opening", ["predict", "--workers", "0"]),  # the file's first bytes: ffmpeg seeks its index
    (signal.SIGINT, "reading", ["predict", "--timeline", "--json"]),  # the index, then packets, then the drip
    (signal.SIGTERM, "reading", ["embed", "--timeline"]),  # a timeline decodes here whatever --workers says
], ids=["SIGTERM-opening", "Ctrl-C-reading-timeline-json", "SIGTERM-reading-embed-timeline"])
def test_a_stop_signal_ends_an_in_process_run_at_once_while_a_server_drips(stop, stalls, command, hostile_server,
                                                                          clip, make_video, tmp_path):
    """--workers 0 and --timeline decode in the main thread, which sat in ffmpeg's C read (up to 30 s for
    each byte of a drip) where Python runs no signal handler: SIGTERM and Ctrl-C waited for the 300 s
    deadline, and the clip before the URL, its views waiting for a full batch, was lost. Now the run stops
    at once, exit 130, with the clip's record kept."""
    video = clip.read_bytes() if stalls == "opening" else \
        make_video("faststart.mp4", 60, container_options={"movflags": "faststart"}).read_bytes()
    hostile_server.head = video[:64] if stalls == "opening" else video[:len(video) // 2]  # moov: at the end / first
    url, out = f"http://127.0.0.1:{hostile_server.server_address[1]}/head+drip.mp4", tmp_path / "out.jsonl"
    done, took = stopped_while_dripping(hostile_server, [*command, str(clip), url, "-m", "demo-motion", "-o", str(out)],
                                        requests=1, stop=stop)
    stdout, stderr = done.stdout, done.stderr
    assert took < 10, took  # at once: well under a second on a quiet machine; waiting on ffmpeg, 30 s and more
    assert done.returncode == 130, stderr[-2000:]
    assert [r["video"] for r in map(json.loads, out.read_text().splitlines())] == [str(clip)]
    assert stdout == "" and stderr.splitlines() == [  # embed says what it kept as predict does
        f"done: 1 {'classified' if command[0] == 'predict' else 'embedded'} (0 failed): {out}",
        f"error: interrupted after 1 of 2 videos: their results are in {out}; rerun the same command with --resume "
        f"to continue"]


def test_a_stop_ends_workers_stuck_on_servers_together(hostile_server, clip, tmp_path):
    """torch's shutdown joined each decoding worker for 5 s before terminating it, one after the other:
    three workers stuck on dripping servers held a stopped run for 16 s. They are ended together now."""
    hostile_server.head = clip.read_bytes()[:64]
    base, out = f"http://127.0.0.1:{hostile_server.server_address[1]}/head+drip.mp4", tmp_path / "out.jsonl"
    urls = [f"{base}?{n}" for n in range(3)]
    args = ["predict", "--workers", "3", str(clip), *urls, "-m", "demo-motion", "-o", str(out)]
    done, took = stopped_while_dripping(hostile_server, args, requests=3, stop=signal.SIGTERM)
    assert done.returncode == 130, done.stderr[-2000:]
    assert [r["video"] for r in map(json.loads, out.read_text().splitlines())] == [str(clip)]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert took < 10, took  # one join of 5 s per stuck worker took 15 s and more; ending them together, about 1 s


def test_fifos_devices_and_file_urls(tmp_path, clip):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it would block until a writer came
    inputs = [str(fifo), f"file://{clip}", "file://elsewhere/clip.mp4", "/dev/zero", f"file://{fifo}"]
    done = vidcls_cli("predict", *inputs, "-m", "demo-motion", "--json", "--workers", "0", "--top-k", "1", timeout=90)
    rows = json.loads(done.stdout)
    assert done.returncode == 1 and [r["video"] for r in rows] == [str(fifo), str(clip), inputs[2], "/dev/zero",
                                                                    str(fifo)], done.stderr[-2000:]
    assert rows[1]["error"] is None  # file:// is a path
    assert "not a regular file" in rows[0]["error"] and "not a regular file" in rows[3]["error"]
    assert "another host" in rows[2]["error"] and "not a regular file" in rows[4]["error"]


# ----------------------------------------------------------------------------- 11: sizes the bounds let through

def test_a_zoo_file_alias_bomb_is_refused_before_anything_walks_it(tmp_path):
    """700 bytes that expand to 9^8 values: `vidcls models --json` ran out of memory (5.8 GB)."""
    bomb = tmp_path / "bomb.yaml"
    entry = ("models:\n  bomb:\n    family: joint\n    attention: quadratic\n    arch: {num_classes: 2, num_frames: 4, "
             "img_size: 16, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}\n    input: {frames: 4, size: 16}\n"
             "    weights: null\n    description: *h\n")
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)) + entry)
    done = vidcls_cli("models", "--json", env={"VIDCLS_ZOO": str(bomb)}, memory=3 * GIB, timeout=90)
    assert done.returncode == 2 and error_lines(done.stderr) == [
        f"error: {bomb}: its aliases expand to more than 1,000,000 values (a YAML alias bomb?); a zoo file is a list "
        f"of entries"], done.stderr[-2000:]


@pytest.mark.parametrize("content, problem", [
    (b"models:\n  x: \xff\n", "not UTF-8 text (byte 13)"),   # was: internal error (UnicodeDecodeError)
    (b"#" * (5 << 20), "larger than 4 MiB; a zoo file is a list of entries"),
], ids=["not-utf8", "too-large"])
def test_zoo_files_that_are_not_small_text_are_one_line(content, problem, tmp_path, monkeypatch):
    path = tmp_path / "zoo.yaml"
    path.write_bytes(content)
    monkeypatch.setenv("VIDCLS_ZOO", str(path))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 2 and error_lines(result.output) == [f"error: VIDCLS_ZOO: {path}: {problem}"]


def test_input_resize_is_bounded_by_the_model_input():
    from vidcls.errors import VidclsError
    from vidcls.zoo.modeldir import InputSpec, ModelCard

    with pytest.raises(VidclsError, match=r"input.resize = 8192 is out of range: at most 4 x input.size = 128"):
        InputSpec(size=32, resize=8192)  # was accepted: 6.5 GB per video on a 32 px model
    assert InputSpec(size=224, resize=256).resize == 256
    card = ModelCard("m", "joint", dict(TINY_ARCH), InputSpec(frames=4, size=224, resize=256))
    assert card.at_shape(size=32).input.resize is None  # an export at a smaller shape drops what no longer fits


@pytest.mark.parametrize("flag, value, problem", [
    ("--clips", "1000000", "clips must be <= 100, got 1000000"),
    ("--threads", "100000", "threads must be <= "),
    ("--workers", "100000", "workers must be <= "),
    ("--frames", "100000", "frames must be <= 1024, got 100000"),  # was: input.frames, exit 1
    ("--batch-size", "100000000", "batch_size must be <= 4096"),
])
def test_run_options_above_their_bound_are_usage_errors(flag, value, problem, clip):
    result = runner.invoke(app, ["predict", str(clip), "-m", "demo-motion", flag, value])
    assert result.exit_code == 2 and problem in result.output and len(error_lines(result.output)) == 1, result.output


def test_top_k_is_cut_to_the_labels(clip, tmp_path):
    """--top-k 1000000000 -o k.csv built a billion-column header (7.5 GB, then the run died)."""
    out = tmp_path / "k.csv"
    done = vidcls_cli("predict", str(clip), "-m", "demo-motion", "--top-k", "1000000000", "-o", str(out),
                      "--workers", "0", memory=4 * GIB, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text().splitlines()[0].split(",")[-5:] == ["label_4", "score_4", "error", "model", "run"]


def test_stdin_is_refused_once_past_its_cap(clip, monkeypatch):
    from vidcls.video import inputs

    monkeypatch.setattr(inputs, "MAX_STDIN_BYTES", 1 << 20)
    result = runner.invoke(app, ["predict", "-", "-m", "demo-motion"], input=b"\0" * (3 << 20))
    assert result.exit_code == 2 and "stdin holds more than 1 MiB" in result.output, result.output


def test_windows_shorter_than_a_frame_fail_that_video(clip):
    result = runner.invoke(app, ["predict", str(clip), "-m", "demo-motion", "--timeline", "--window", "0.001",
                                 "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert error_lines(result.output) == [f"error: {clip}: --window 0.001 s is shorter than one frame of this video "
                                          f"(0.04 s at 25 fps)"]


# ----------------------------------------------------------------------------- 16: one line, not "internal error"


@pytest.mark.parametrize("args, code, problem", [
    (["sample-clip", "{tmp}/big.mp4", "--frames", "100000000"], 2, "--frames x --width x --height x 3 bytes is above"),
    (["export", "demo-motion", "--out", "{tmp}/b.onnx", "--batch", "1000000000"], 2, "--batch must be dynamic or"),
    (["train", "--model", "demo-motion", "--train", "x", "--val", "y", "--output", "{tmp}/r", "--lr", "1e300"], 2,
     "--lr must be in (0, 10]"),
    (["train", "--model", "demo-motion", "--train", "x", "--val", "y", "--output", "{tmp}/r", "--warmup-epochs",
      "inf"], 2, "--warmup-epochs must be a finite number"),
    (["train", "--model", "demo-motion", "--train", "x", "--val", "y", "--output", "{tmp}/r", "--weight-decay",
      "-5"], 2, "--weight-decay must be in [0, 10]"),
    (["predict", "{clip}", "-m", "demo-motion", "-o", "{tmp}/" + "x" * 300 + ".jsonl"], 2, "File name too long"),
    (["predict", "{clip}", "-m", "demo-motion", "-o", "{tmp}/folder.jsonl"], 2, "is a directory; name a file"),
    (["predict", "{clip}", "-m", "demo-motion", "--weights", "{tmp}/fifo"], 1, "is not a regular file"),
], ids=["sample-clip-frames", "export-batch", "lr", "warmup", "weight-decay", "name-too-long", "output-dir",
        "weights-fifo"])
def test_hostile_values_are_one_line_with_the_right_exit_code(args, code, problem, clip, tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    os.mkfifo(tmp_path / "fifo")
    result = runner.invoke(app, [a.format(tmp=tmp_path, clip=clip) for a in args])
    assert result.exit_code == code and problem in " ".join(result.output.split()), result.output
    assert len(error_lines(result.output)) == 1 and "internal error" not in result.output


@pytest.mark.parametrize("card", ["{not json", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_an_onnx_card_that_is_not_a_json_object_is_one_line(card, clip, tmp_path):
    import onnx

    from onnx_graphs import tiny_onnx

    path = tiny_onnx(tmp_path / "model.onnx", DEMO_CARD, 4)
    model = onnx.load(str(path))
    model.metadata_props[0].value = card  # was: internal error (JSONDecodeError, AttributeError)
    onnx.save(model, str(path))
    result = runner.invoke(app, ["predict", str(clip), "-m", str(path), "--workers", "0"])
    assert result.exit_code == 1 and "its vidcls card is not" in result.output, result.output
    assert len(error_lines(result.output)) == 1 and "internal error" not in result.output
