"""A local HTTP server on 127.0.0.1 for the download and URL-input tests, and a fake Hub on it; no other
address is contacted."""

import contextlib
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Served:
    """What the test server holds (path -> bytes) and what it was asked: (path, Range header), bytes sent.

    For the fake Hub: `announced` (path -> the size its headers claim instead of the real one) and
    `endless` (paths whose body, sent without a Content-Length, never ends: it stops at HUB_CAP) and
    `cut` (paths whose body ends, the connection closed, halfway through the size announced).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0
        self.announced: dict[str, int] = {}
        self.endless: set[str] = set()
        self.cut: set[str] = set()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test's output clean: no access log line per request."""

    def log_message(self, *args) -> None:
        pass


class RangeHandler(QuietHandler):
    """GET with `Range: bytes=N-` support (206, or 416 past the end), as S3 and web servers answer."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        served: Served = self.server.served
        served.requests.append((self.path, self.headers.get("Range")))
        data = served.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers.get("Range") else 0
        if start >= len(data) > 0 and self.headers.get("Range"):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        served.bytes_sent += len(data) - start


@contextlib.contextmanager
def local_server(handler: type[BaseHTTPRequestHandler], **state):
    """A threaded HTTP server on 127.0.0.1 (a free port) answering with `handler`, `state` set as its
    attributes (what the handler reads and records), served from a daemon thread until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    for name, value in state.items():
        setattr(httpd, name, value)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (a free port) serving Served.files."""
    with local_server(RangeHandler, served=Served()) as httpd:
        yield httpd


HUB_COMMIT = "c0ffee" * 6 + "c0ff"  # the one commit the fake Hub has (40 hex digits)
HUB_CAP = 32 << 20  # the most an endless body sends: a client that does not stop ends there, never fills the disk


class HubHandler(QuietHandler):
    """HEAD and GET /OWNER/REPO/resolve/REVISION/FILE as hf_hub_download asks the Hub (HF_ENDPOINT): the
    HEAD answer carries the commit (X-Repo-Commit), an ETag that is the file's sha256 (as for an LFS file)
    and its size; a missing file is a 404 with X-Error-Code EntryNotFound. Files are keyed by the path
    after the revision's segment: Served.files["OWNER/REPO/FILE"]."""

    def _file(self) -> tuple[str, bytes | None]:
        repo_and_file = self.path.split("?")[0].lstrip("/").split("/resolve/", 1)
        key = f"{repo_and_file[0]}/{repo_and_file[1].split('/', 1)[1]}" if len(repo_and_file) == 2 else ""
        return key, self.server.served.files.get(key)

    def _headers(self, key: str, data: bytes, *, body: bool) -> None:
        served: Served = self.server.served
        self.send_response(200)
        self.send_header("X-Repo-Commit", HUB_COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        if not (body and key in served.endless):
            self.send_header("Content-Length", str(served.announced.get(key, len(data))))
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        key, data = self._file()
        self.server.served.requests.append((self.command + " " + self.path, None))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", HUB_COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._headers(key, data, body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        served: Served = self.server.served
        key, data = self._file()
        served.requests.append((self.command + " " + self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        self._headers(key, data, body=True)
        endless = key in served.endless or served.announced.get(key, len(data)) > len(data)
        try:
            if key in served.cut:
                self.wfile.write(data[:len(data) // 2])
                self.close_connection = True
                return
            if not endless:
                self.wfile.write(data)
                served.bytes_sent += len(data)
                return
            while served.bytes_sent < HUB_CAP:
                self.wfile.write(b"\0" * 65536)
                served.bytes_sent += 65536
        except OSError:  # the client hung up: what a bounded client does
            pass


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hub on 127.0.0.1 (a free port) serving Served.files, set as huggingface_hub's endpoint, online."""
    from huggingface_hub import constants

    from vidcls.zoo import hub

    with local_server(HubHandler, served=Served()) as httpd:
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)  # what vidcls probes; the URLs come from the
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",  # template, made from HF_ENDPOINT at import
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        hub.unreachable.cache_clear()
        yield httpd.served
        hub.unreachable.cache_clear()
