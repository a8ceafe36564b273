"""`vidcls serve` in a subprocess on 127.0.0.1 (a free port), and small HTTP clients for it (stdlib only)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class Running:
    """A `vidcls serve --model demo-motion` process; its uploads spool under its own TMPDIR."""

    def __init__(self, tmp: Path, *args: str, model: str = "demo-motion") -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "vidcls", "serve", "--model", model, "--host", HOST, "--port", "0", *args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"vidcls serve exited: {''.join(self.log)}")
            if line.startswith("serving:"):
                self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line)[1])
                return

    def _drain(self, lines: queue.Queue) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    def spool(self) -> list[Path]:
        """The spool folders of this server (one while it runs, none once it stopped)."""
        return list(self.tmp.glob("vidcls-serve-*"))

    def spooled(self) -> list[Path]:
        """Upload files on disk now."""
        return [file for folder in self.spool() for file in folder.iterdir()]

    def health(self) -> dict[str, Any]:
        return call(self.port, "GET", "/health")[2]

    def wait_inside(self, count: int, timeout: float = 20) -> None:
        """Until `count` requests are inside the server (admitted, not answered)."""
        deadline = time.monotonic() + timeout
        while self.health()["queue"] != count:
            assert time.monotonic() < deadline, f"queue never reached {count}: {self.health()}"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


def call(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
         timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or text) of one request on a fresh connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    kind = response.getheader("content-type", "")
    return response.status, dict(response.getheaders()), json.loads(data) if "json" in kind else data.decode()


def form(fields: dict[str, str], video: tuple[str, bytes] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body (as a browser's form sends it) and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if video is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{video[0]}"\r\n'
                     f"Content-Type: video/mp4\r\n\r\n".encode() + video[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_form(port: int, path: str, video: Path | None, fields: dict[str, str] | None = None,
              timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    body, kind = form(fields or {}, (video.name, video.read_bytes()) if video is not None else None)
    return call(port, "POST", path, body, {"Content-Type": kind}, timeout)


def post_raw(port: int, path: str, data: bytes, timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    return call(port, "POST", path, data, {"Content-Type": "application/octet-stream"}, timeout)


def open_upload(port: int, length: int, first: bytes = b"", path: str = "/predict?name=clip.mp4") -> socket.socket:
    """A raw-body upload announcing `length` bytes of which only `first` are sent (yet)."""
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + first)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """The response on a raw socket (the server closes or sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None
