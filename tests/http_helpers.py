"""A local HTTP server on 127.0.0.1 for the download and URL-input tests; no other address is contacted."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Served:
    """What the test server holds (path -> bytes) and what it was asked: (path, Range header), bytes sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0


class RangeHandler(BaseHTTPRequestHandler):
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

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (a free port) serving Served.files."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.served = Served()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
