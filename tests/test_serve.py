"""`vidcls serve` end to end: a real server in a subprocess on 127.0.0.1 (a free port), demo-motion, tiny clips.

Answers equal `predict --json`; concurrent clients share forward passes; a bad upload fails alone;
413 before the body is read; 429 with Retry-After when the queue is full; spooled uploads removed
after success, failure and a client that went away; SIGTERM drains the requests in flight and exits
0; the web page, in the system's Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="vidcls[serve] is not installed")
pytest.importorskip("uvicorn", reason="vidcls[serve] is not installed")

from typer.testing import CliRunner  # noqa: E402

from serve_helpers import HOST, ROOT, Running, call, open_upload, post_form, post_raw, read_answer  # noqa: E402
from vidcls.cli import app  # noqa: E402
from vidcls.video.synthetic import make_sample_clip  # noqa: E402

LIMIT_MB = 0.5
QUEUE = 12
TIMING = {"processing_s", "seconds", "timing_ms", "peak_memory_mib"}  # differ from run to run
CHROMIUM = "/usr/bin/chromium"


def predict_json(*args: object) -> list[dict]:
    """`vidcls predict ARGS --model demo-motion --json` (decoding in this process: no worker to start)."""
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--model", "demo-motion", "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same_answer(served: dict, printed: dict) -> None:
    """Equal but for the timings and the name (the server names an upload by its file name)."""
    assert served["video"] == Path(printed["video"]).name
    left = {k: v for k, v in served.items() if k not in TIMING | {"video", "top_k", "timeline", "segments"}}
    right = {k: v for k, v in printed.items() if k not in TIMING | {"video", "top_k", "timeline", "segments"}}
    assert left == right
    # views batched with other requests' views: the same labels, scores equal to float32 rounding
    assert [e["label"] for e in served["top_k"]] == [e["label"] for e in printed["top_k"]]
    assert [e["score"] for e in served["top_k"]] == pytest.approx([e["score"] for e in printed["top_k"]], abs=2e-5)
    for key in ("timeline", "segments"):
        assert (key in served) == (key in printed)
    if "segments" in printed:
        assert [s["label"] for s in served["segments"]] == [s["label"] for s in printed["segments"]]
        assert [w["start_s"] for w in served["timeline"]] == [w["start_s"] for w in printed["timeline"]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    found = {"left": make_sample_clip(root / "left.mp4", direction="left", seed=1),
             "up": make_sample_clip(root / "up.mp4", direction="up", frames=24, height=64, width=48, seed=2),
             "long": make_sample_clip(root / "long.mp4", direction="right", frames=48, seed=3)}
    (root / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    found["bad"] = root / "bad.mp4"
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    running = Running(tmp_path_factory.mktemp("serve"), "--max-upload-mb", str(LIMIT_MB), "--max-queue",
                      str(QUEUE), "--allow-urls")
    yield running
    assert running.stop() == 0, "".join(running.log)
    assert running.spool() == []  # the spool folder goes with the server


def test_answers_equal_predict_json(served, clips):
    printed = predict_json(clips["left"], clips["up"], "--top-k", "3")
    status, _, left = post_form(served.port, "/predict", clips["left"], {"top_k": "3"})  # a browser's form
    assert status == 200, left
    same_answer(left, printed[0])
    # as curl --data-binary sends it
    status, _, up = post_raw(served.port, "/predict?top_k=3&name=up.mp4", clips["up"].read_bytes())
    assert status == 200, up
    same_answer(up, printed[1])
    over_time = predict_json(clips["long"], "--timeline", "--window", "1", "--hop", "0.5")[0]
    status, _, answer = post_form(served.port, "/predict", clips["long"], {"timeline": "true", "window": "1",
                                                                          "hop": "0.5"})
    assert status == 200, answer
    same_answer(answer, over_time)
    assert len(answer["timeline"]) > 1
    assert served.spooled() == []


def test_embed_equals_embed_json(served, clips):
    result = CliRunner().invoke(app, ["embed", str(clips["left"]), "--model", "demo-motion", "--json", "--normalize",
                                      "--workers", "0"])
    printed = json.loads(result.stdout)[0]
    status, _, answer = post_form(served.port, "/embed?normalize=1", clips["left"])
    assert status == 200, answer
    assert answer["embedding"] == pytest.approx(printed["embedding"], abs=1e-4)
    assert {k: v for k, v in answer["meta"].items() if k != "ref"} == {k: v for k, v in printed["meta"].items()
                                                                       if k != "ref"}


def test_eight_clients_by_25_clips_all_answered(served, tmp_path):
    directions = ["left", "right", "up", "down"]
    videos = [make_sample_clip(tmp_path / f"c{i}.mp4", direction=directions[i % 4], frames=8, height=32, width=32,
                               seed=i) for i in range(25)]
    expected = [p["top_k"][0]["label"] for p in predict_json(*videos, "--top-k", "1")]
    before = batches(served.port)

    def client(_: int) -> list[str]:
        labels = []
        for video in videos:
            status, _, answer = post_raw(served.port, "/predict?top_k=1", video.read_bytes())
            assert status == 200, answer
            labels.append(answer["top_k"][0]["label"])
        return labels

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(client, range(8)))
    assert answers == [expected] * 8
    passes, views = (a - b for a, b in zip(batches(served.port), before, strict=True))
    assert views == 200 and passes < views  # views of concurrent requests shared forward passes
    assert served.spooled() == []


def batches(port: int) -> tuple[float, float]:
    """(forward passes, views in them) so far, from /metrics."""
    text = call(port, "GET", "/metrics")[2]
    count = float(re.search(r"^vidcls_batch_views_count (\S+)$", text, re.M)[1])
    total = float(re.search(r"^vidcls_batch_views_sum (\S+)$", text, re.M)[1])
    return count, total


def test_a_bad_upload_fails_alone_and_the_next_is_fine(served, clips):
    status, _, answer = post_form(served.port, "/predict", clips["bad"])
    assert status == 422 and answer["video"] == "bad.mp4" and "MP4" in answer["error"]
    for body, kind in ((b"--x\r\nbroken", "multipart/form-data; boundary=x"), (b"", "application/octet-stream")):
        status, _, answer = call(served.port, "POST", "/predict", body, {"Content-Type": kind})
        assert status == 400 and answer["error"], answer
    for query, message in (("top_k=0", "top_k"), ("topk=1", "unknown option"), ("window=-1", "window"),
                           ("labels=cat,dog", "model demo-motion has no text side"),
                           ("url=file:///etc/passwd", "http")):
        status, _, answer = post_raw(served.port, f"/predict?{query}", clips["left"].read_bytes())
        assert status == 400 and message in answer["error"], (query, answer)
    status, _, answer = post_form(served.port, "/predict", clips["left"])
    assert status == 200 and answer["top_k"][0]["label"] == "left"
    assert served.spooled() == []


def test_labels_for_a_graph_say_where_labels_are_taken(tmp_path):
    """A graph (exported, or X-CLIP converted for --runtime openvino) keeps the classes it was made with:
    a request's labels are refused naming that, not as a model without a text side."""
    from onnx_graphs import tiny_onnx
    from vidcls.errors import UsageError
    from vidcls.serve.service import labelled
    from vidcls.zoo.resolve import load_model

    card = json.loads((ROOT / "vidcls" / "assets" / "demo-motion" / "config.json").read_text())
    graph = load_model(str(tiny_onnx(tmp_path / "model.onnx", card, 4)))
    assert labelled(graph, None) is graph
    with pytest.raises(UsageError, match=r"classes are fixed in it.*X-CLIP, takes them per request on --runtime torch"):
        labelled(graph, ("cat", "dog"))


def test_a_playlist_upload_opens_nothing_it_names(served, server):
    """An HLS playlist or a concat list would have ffmpeg open the URLs and paths written in it: refused."""
    url = f"http://127.0.0.1:{server.server_address[1]}/segment.ts"
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n".encode()
    for data in (playlist, b"ffconcat version 1.0\nfile '/etc/hostname'\n"):
        status, _, answer = post_raw(served.port, "/predict", data)
        assert status == 422 and answer["error"], answer
    assert server.served.requests == []


def test_url_input(served, clips, server):
    """--allow-urls: the server fetches an http URL (here the tests' own server on 127.0.0.1)."""
    server.served.files["/clip.mp4"] = clips["left"].read_bytes()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    status, _, answer = post_raw(served.port, f"/predict?url={url}/clip.mp4", b"")
    assert status == 200 and answer["video"] == f"{url}/clip.mp4" and answer["top_k"][0]["label"] == "left"
    status, _, answer = post_raw(served.port, f"/predict?url={url}/missing.mp4", b"")
    assert status == 422 and "404" in answer["error"]


def test_413_before_the_body_is_read(served):
    limit = int(LIMIT_MB * 2**20)
    with open_upload(served.port, 10 * 2**30) as sock:  # announces 10 GiB, sends none of it
        status, _, answer = read_answer(sock)
    assert status == 413 and "0.5 MiB" in answer["error"]
    with socket.create_connection((HOST, served.port), timeout=30) as sock:  # chunked: no size up front
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"\0" * 65536
        for _ in range(limit // len(chunk) + 2):  # just past the limit; the body is never finished
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        status, _, answer = read_answer(sock)
    assert status == 413
    assert served.spooled() == []


def test_429_when_the_queue_is_full_and_uploads_removed_when_clients_go(served, clips):
    data = clips["left"].read_bytes()
    waiting = [open_upload(served.port, len(data), data[:100]) for _ in range(QUEUE)]
    try:
        served.wait_inside(QUEUE)
        assert len(served.spooled()) == QUEUE  # each upload in its own file while it arrives
        status, headers, answer = post_raw(served.port, "/predict", data)
        assert status == 429 and int(headers["retry-after"]) >= 1 and "busy" in answer["error"]
    finally:
        for sock in waiting:  # the clients go away mid-upload
            sock.close()
    served.wait_inside(0)
    assert served.spooled() == []
    assert post_raw(served.port, "/predict", data)[0] == 200
    text = call(served.port, "GET", "/metrics")[2]
    assert 'vidcls_errors_total{endpoint="predict",reason="queue_full"}' in text
    assert 'vidcls_errors_total{endpoint="predict",reason="disconnected"}' in text


def test_models_health_metrics_and_page(served):
    status, _, models = call(served.port, "GET", "/models")
    assert status == 200 and models[0]["name"] == "demo-motion" and models[0]["labels"] == ["left", "right", "up",
                                                                                            "down"]
    assert call(served.port, "GET", "/health")[2]["status"] == "ok"
    text = call(served.port, "GET", "/metrics")[2]
    for name in ("vidcls_requests_total", "vidcls_queue_depth", "vidcls_request_latency_seconds_bucket",
                 "vidcls_videos_per_second", "process_resident_memory_bytes"):
        assert name in text
    status, _, page = call(served.port, "GET", "/")
    assert status == 200 and "<script>" in page
    assert call(served.port, "GET", "/nothing")[:3:2] == (404, {"error": "Not Found"})
    assert call(served.port, "GET", "/predict")[0] == 405


def test_sigterm_drains_requests_in_flight_and_exits_0(tmp_path, clips):
    running = Running(tmp_path / "serve", "--grace", "30", "--workers", "0")  # decoding in a thread: a quicker start
    data = clips["up"].read_bytes()
    status, _, answer = post_raw(running.port, "/predict?url=http://127.0.0.1:9/x.mp4", b"")
    assert status == 400 and "--allow-urls" in answer["error"]
    uploads = [open_upload(running.port, len(data), data[:len(data) // 2]) for _ in range(3)]
    running.wait_inside(3)
    running.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # it stops accepting new connections...
        try:
            socket.create_connection((HOST, running.port), timeout=1).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    for sock in uploads:  # ...and finishes the requests it had
        sock.sendall(data[len(data) // 2:])
    for sock in uploads:
        status, _, answer = read_answer(sock)
        sock.close()
        assert status == 200 and answer["top_k"][0]["label"] == "up"
    assert running.process.wait(timeout=60) == 0, "".join(running.log)
    assert running.spool() == []


def test_serve_is_not_imported_by_vidcls_or_other_commands():
    code = ("import sys, vidcls, vidcls.cli; "
            "print([m for m in sys.modules if m.startswith(('starlette', 'uvicorn', 'vidcls.serve'))])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_web_page_in_a_real_browser(served, clips, tmp_path):
    """The page at / in headless Chromium (Debian's, through Playwright): pick a clip, read the label."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(  # a fresh profile folder
            tmp_path / "profile", executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS,
            headless=True)
        try:
            page = browser.new_page()
            page.goto(f"http://{HOST}:{served.port}/")
            page.wait_for_function("document.getElementById('model').textContent.startsWith('demo-motion')")
            page.set_input_files("#file", str(clips["left"]))
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.text_content("#top-label") == "left"
            assert page.locator("#bars .row").count() == 4
            page.check("#timeline")
            page.set_input_files("#file", str(clips["long"]))
            page.wait_for_selector("#over-time:not([hidden])", timeout=30_000)
            assert "windows" in page.text_content("#legend")
        finally:
            browser.close()


def test_zero_shot_labels_per_request_equal_predict_with_labels(tmp_path_factory, clips):
    """A text model (a tiny X-CLIP): requests with different label sets share the server at once, each
    answered as `predict --labels` answers; without labels, the server's own set (serve --labels)."""
    from xclip_helpers import save_tiny_xclip

    _, directory = save_tiny_xclip(tmp_path_factory.mktemp("xclip") / "model")
    sets = ["cooking,playing guitar,repairing a bike", "ball,dancing", "video,a,bike,of"]
    running = Running(tmp_path_factory.mktemp("serve-xclip"), "--labels", "video,bike", model=str(directory))
    try:
        with ThreadPoolExecutor(len(sets) * 2) as pool:
            answers = list(pool.map(lambda names: post_form(running.port, "/predict", clips["left"],
                                                            {"labels": names, "top_k": "3"}), sets * 2))
        own = post_form(running.port, "/predict", clips["left"], {"top_k": "3"})
        refused = post_form(running.port, "/predict", clips["left"], {"labels": "a,,b"})
    finally:
        assert running.stop() == 0, "".join(running.log)
    for names, (status, _, answer) in zip(sets * 2, answers, strict=True):
        assert status == 200, answer
        result = CliRunner().invoke(app, ["predict", str(clips["left"]), "--model", str(directory), "--labels", names,
                                          "--top-k", "3", "--json", "--workers", "0"])
        assert result.exit_code == 0, result.output
        [printed] = json.loads(result.stdout)
        assert [e["label"] for e in answer["top_k"]] == [e["label"] for e in printed["top_k"]]
        assert [e["score"] for e in answer["top_k"]] == pytest.approx([e["score"] for e in printed["top_k"]],
                                                                      abs=2e-5)
    assert own[0] == 200 and {e["label"] for e in own[2]["top_k"]} == {"video", "bike"}
    assert refused[0] == 400 and "empty name" in refused[2]["error"]
