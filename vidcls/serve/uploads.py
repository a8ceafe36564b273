"""A request's video into a private temporary file: counted while it streams in, never a path of the client's.

Every upload (a multipart field `video`, the raw request body, or with --allow-urls a fetched
http(s) URL) is written to a fresh file (mode 0600, made by mkstemp) in the server's own spool
folder (mode 0700, made by mkdtemp), and removed when its request ends, however it ends: answered,
failed, timed out, or its client gone. The client's file name is only a label in the answer.
Bytes are counted as they arrive: past the limit the request is answered 413 at once, without
reading the rest (a Content-Length above it is refused before reading anything).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from vidcls.errors import first_line, printable
from vidcls.video.container import NETWORK_TIMEOUT_S

MAX_FIELDS_BYTES = 64 * 1024  # the form's other fields together
MAX_PARTS = 32
CHUNK = 1 << 16


class HTTPError(Exception):
    """An answer other than 200, as {"error": message}; headers such as Retry-After."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"upload larger than the server's limit of {limit / 2**20:g} MiB (--max-upload-mb)")


class Spool:
    """The server's private folder of uploads, removed with everything in it when the server stops."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vidcls-serve-"))

    @contextlib.contextmanager
    def file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A new private file for one upload (path, open for writing), deleted when the block ends."""
        fd, name = tempfile.mkstemp(dir=self.path, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield Path(name), handle
        finally:
            Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class Upload:
    """What came with the video: its label (a client's file name, printable, no folders), the form's
    other fields, and the video's size in bytes."""

    name: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0


class _Sink:
    """Bytes of the video into the spool file, counted against the limit."""

    def __init__(self, target: BinaryIO, limit: int) -> None:
        self.target, self.limit, self.size = target, limit, 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise too_large(self.limit)
        self.target.write(data)


def label(filename: str | None) -> str | None:
    """A client's file name as a label only: its last component, printable, at most 200 characters."""
    if not filename:
        return None
    return printable(filename.replace("\\", "/").rsplit("/", 1)[-1])[:200] or None


class _Form:
    """A multipart/form-data body parsed as it streams (python-multipart): the `video` part to the sink,
    the other fields into memory (64 KiB at most)."""

    def __init__(self, boundary: bytes, sink: _Sink) -> None:
        self.sink, self.upload = sink, Upload()
        self.header_field, self.header_value = b"", b""
        self.headers: dict[bytes, bytes] = {}
        self.part: str | None = None  # the current part's field name
        self.value = bytearray()
        self.parts = self.field_bytes = 0
        self.videos = 0
        callbacks = {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
                     "on_header_field": self._field, "on_header_value": self._value,
                     "on_header_end": self._header_end, "on_headers_finished": self._headers_done}
        self.parser = MultipartParser(boundary, callbacks)

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise HTTPError(400, f"more than {MAX_PARTS} form fields")
        self.headers, self.part, self.value = {}, None, bytearray()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "video":
            self.videos += 1
            if self.videos > 1:
                raise HTTPError(400, "more than one `video` field: send one video per request")
            self.upload.name = label(params.get(b"filename", b"").decode("utf-8", "replace"))
        elif b"filename" in params:
            raise HTTPError(400, f"unexpected file field {printable(name)!r}: the video goes in the field `video`")
        self.part = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.part == "video":
            self.sink.write(data[start:end])
            return
        self.field_bytes += end - start
        if self.field_bytes > MAX_FIELDS_BYTES:
            raise HTTPError(400, f"form fields larger than {MAX_FIELDS_BYTES // 1024} KiB")
        self.value += data[start:end]

    def _end(self) -> None:
        if self.part and self.part != "video":
            try:
                self.upload.fields[self.part] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPError(400, f"form field {printable(self.part)!r} is not UTF-8 text") from None


async def receive_video(content_type: str, content_length: str | None, chunks: AsyncIterator[bytes],
                        target: BinaryIO, limit: int) -> Upload:
    """The request body into `target`: a multipart form's `video` field, or else the whole body."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit + MAX_FIELDS_BYTES:
        raise too_large(limit)
    sink = _Sink(target, limit)
    kind, params = parse_options_header(content_type or "")
    if kind == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise HTTPError(400, "multipart/form-data without a boundary")
        form = _Form(params[b"boundary"], sink)
        try:
            async for chunk in chunks:
                form.parser.write(chunk)
            form.parser.finalize()
        except HTTPError:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors: a malformed body
            raise HTTPError(400, f"malformed multipart body ({first_line(exc)})") from None
        form.upload.size = sink.size
        form.upload.name = form.upload.name if form.videos else None
        return form.upload
    async for chunk in chunks:
        sink.write(chunk)
    return Upload(size=sink.size)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise HTTPError(422, "the URL redirects to something other than http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_url(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise HTTPError(400, "`url` must be an http:// or https:// URL")


def fetch_url(url: str, target: BinaryIO, limit: int) -> int:
    """Download `url` into `target` (the same network timeout as predict's URL inputs, the upload limit
    counted as it arrives); a failure is a 422 naming why. Blocking: run it in a thread."""
    check_url(url)
    opener = urllib.request.build_opener(_HttpRedirectsOnly)
    sink = _Sink(target, limit)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "vidcls-serve"}),
                         timeout=NETWORK_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise too_large(limit)
            while chunk := response.read(CHUNK):
                sink.write(chunk)
    except urllib.error.HTTPError as exc:
        raise HTTPError(422, f"could not fetch the URL: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HTTPError(422, f"could not fetch the URL: {first_line(reason)}") from None
    return sink.size
