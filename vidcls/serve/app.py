"""The Starlette app: routes, request options, admission (the bounded queue), timeouts, errors as JSON.

    GET  /          the web page (package data: plain HTML and a little JavaScript)
    POST /predict   a video (multipart field `video`, or the raw body; `url` with --allow-urls) ->
                    predict's per-video JSON object; options top_k, timeline, window, hop, labels
    POST /embed     the same -> embed's per-video object; options views, normalize, timeline, window, hop
    GET  /models    the loaded model's card, as served
    GET  /health    ok (200), or draining (503) after SIGTERM
    GET  /metrics   Prometheus text

Every refusal is `{"error": "..."}` with its status: 400 a bad option or request, 413 an upload past
--max-upload-mb, 422 a video that could not be decoded or classified (the body is then the whole
record, its `error` set), 429 the queue full (with Retry-After), 504 past --timeout.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from vidcls.errors import UsageError, first_line
from vidcls.inference.options import EmbedOptions, TimelineOptions, parse_labels
from vidcls.serve.engine import Ticket
from vidcls.serve.metrics import Metrics
from vidcls.serve.service import Service, Work
from vidcls.serve.uploads import HTTPError, Spool, check_url, fetch_url, receive_video
from vidcls.video.inputs import VideoInput

log = logging.getLogger("vidcls.serve")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
COMMON = {"timeline", "window", "hop", "url", "name"}
FIELDS = {"predict": COMMON | {"top_k", "labels"}, "embed": COMMON | {"views", "normalize"}}
CLIENT_GONE = 499  # nginx's status for a client that closed the connection before the answer


def _number(fields: dict[str, str], name: str, kind: Callable[[str], Any]) -> Any:
    if fields.get(name, "") == "":
        return None
    try:
        value = kind(fields[name])
    except ValueError:
        raise HTTPError(400, f"`{name}` must be a number, got {fields[name][:40]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise HTTPError(400, f"`{name}` must be a finite number")
    return value


def _flag(fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "").strip().lower()
    if value not in TRUE + FALSE:
        raise HTTPError(400, f"`{name}` must be true or false, got {value[:40]!r}")
    return value in TRUE


def parse_work(endpoint: str, fields: dict[str, str]) -> Work:
    """A request's options (query and form fields together), checked as the command line checks them."""
    unknown = sorted(set(fields) - FIELDS[endpoint])
    if unknown:
        raise HTTPError(400, f"unknown option(s) {', '.join(unknown)}; /{endpoint} takes "
                             f"{', '.join(sorted(FIELDS[endpoint]))}")
    window, hop = _number(fields, "window", float), _number(fields, "hop", float)
    over_time = _flag(fields, "timeline") or window is not None or hop is not None
    try:
        if endpoint == "embed":
            how = EmbedOptions(views=fields.get("views") or "mean", normalize=_flag(fields, "normalize"),
                               timeline=over_time, window_s=window, hop_s=hop)
            return Work(embed=how)
        top_k = _number(fields, "top_k", int)
        if top_k is not None and top_k < 1:
            raise HTTPError(400, f"`top_k` must be >= 1, got {top_k}")
        if over_time:
            TimelineOptions(window, hop)
        # as --labels parses them (no empty or repeated name), from the text only: never `@FILE`
        text = fields.get("labels", "").strip()
        labels = parse_labels(text.replace("\n", ",").split(",")) if text else None
    except UsageError as exc:
        raise HTTPError(400, str(exc).replace("--", "")) from None
    return Work(top_k=top_k or 5, timeline=over_time, window_s=window, hop_s=hop, labels=labels)


class Admission:
    """The bounded queue: at most `capacity` requests inside at once (uploading, decoding, waiting,
    running); one more is refused with 429 and a Retry-After from the recent rate of answers."""

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity, self.metrics, self.inside = capacity, metrics, 0

    def enter(self) -> None:
        if self.inside >= self.capacity:
            wait = max(1, min(60, math.ceil(self.inside / max(self.metrics.rate(), 1.0))))
            raise HTTPError(429, f"server busy: {self.inside} requests in progress (--max-queue {self.capacity}); "
                                 f"retry in {wait} s", {"Retry-After": str(wait)})
        self.inside += 1
        self.metrics.queue.set(self.inside)

    def leave(self) -> None:
        self.inside -= 1
        self.metrics.queue.set(self.inside)


async def _routing_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as JSON too (`{"error": "Not Found"}`), like every other refusal."""
    status = getattr(exc, "status_code", 500)
    return JSONResponse({"error": getattr(exc, "detail", "error")}, status_code=status,
                        headers=getattr(exc, "headers", None))


async def _until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: receive() then waits)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Server:
    """The app's state: the service (model and engine), the spool, metrics, admission, the page."""

    def __init__(self, service: Service, spool: Spool, metrics: Metrics) -> None:
        self.service, self.spool, self.metrics = service, spool, metrics
        self.config = service.config
        self.admission = Admission(self.config.max_queue, metrics)
        self.draining = False
        self.page = (importlib.resources.files("vidcls.serve") / "static" / "index.html").read_text("utf-8")

    def app(self) -> Starlette:
        routes = [Route("/", self.index), Route("/models", self.models), Route("/health", self.health),
                  Route("/metrics", self.metrics_text),
                  Route("/predict", self.predict, methods=["POST"]), Route("/embed", self.embed, methods=["POST"])]
        return Starlette(routes=routes, exception_handlers={StarletteHTTPException: _routing_error})

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page)

    async def models(self, request: Request) -> Response:
        return JSONResponse([self.service.card()])

    async def health(self, request: Request) -> Response:
        state = {"status": "draining" if self.draining else "ok", "model": self.service.loaded.name,
                 "queue": self.admission.inside, "capacity": self.admission.capacity}
        return JSONResponse(state, status_code=503 if self.draining else 200)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.text(), media_type=self.metrics.content_type)

    async def predict(self, request: Request) -> Response:
        return await self._answer(request, "predict")

    async def embed(self, request: Request) -> Response:
        return await self._answer(request, "embed")

    async def _answer(self, request: Request, endpoint: str) -> Response:
        """One request, counted: admission, then the work within --timeout; every outcome a JSON answer."""
        start, ticket, reason = time.perf_counter(), Ticket(), None
        try:
            self.admission.enter()
        except HTTPError as exc:
            return self._error(endpoint, exc, "queue_full")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                status, body = await self._work(request, endpoint, ticket)
            reason = "video_failed" if status != 200 else None
            response: Response = JSONResponse(body, status_code=status)
        except TimeoutError:
            ticket.cancelled = True
            response = self._error(endpoint, HTTPError(504, f"request took longer than --timeout "
                                                            f"{self.config.timeout_s:g} s"), "timeout")
        except HTTPError as exc:
            ticket.cancelled = True
            response = self._error(endpoint, exc, {400: "bad_request", 413: "too_large"}.get(exc.status, "failed"))
        except ClientDisconnect:
            ticket.cancelled = True
            response = self._error(endpoint, HTTPError(CLIENT_GONE, "client disconnected"), "disconnected")
        except Exception as exc:  # noqa: BLE001 - an answer, never a dropped connection
            ticket.cancelled = True
            log.exception("internal error")
            response = self._error(endpoint, HTTPError(500, f"internal error: {type(exc).__name__}: "
                                                            f"{first_line(exc)}"), "internal")
        finally:
            self.admission.leave()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        if reason is not None:
            self.metrics.errors.labels(endpoint, reason).inc()
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    def _error(self, endpoint: str, exc: HTTPError, reason: str) -> JSONResponse:
        self.metrics.errors.labels(endpoint, reason).inc()
        if reason == "queue_full":
            self.metrics.requests.labels(endpoint, "429").inc()
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    async def _work(self, request: Request, endpoint: str, ticket: Ticket) -> tuple[int, dict[str, Any]]:
        """Spool the video, run it, and answer (200, record) or (422, record with its error)."""
        fields = dict(request.query_params)
        parse_work(endpoint, fields)  # refuse bad query options before reading the body
        self._check_url(fields)
        limit = self.config.max_upload_bytes
        with self.spool.file() as (path, handle):
            upload = await receive_video(request.headers.get("content-type", ""),
                                         request.headers.get("content-length"), request.stream(), handle, limit)
            fields.update(upload.fields)
            work = parse_work(endpoint, fields)
            name = upload.name or fields.get("name") or "upload"
            if fields.get("url"):
                self._check_url(fields)
                if upload.size:
                    raise HTTPError(400, "send a video or a `url`, not both")
                await asyncio.to_thread(fetch_url, fields["url"], handle, limit)
                name = fields["url"]
            elif not upload.size:
                raise HTTPError(400, "no video in the request: send it as the multipart field `video` "
                                     "or as the request body")
            handle.close()
            record = await self._run(request, VideoInput(name, str(path)), work, ticket)
        failed = record.get("error") is not None
        self.metrics.video_done(failed)
        return (422 if failed else 200), record

    def _check_url(self, fields: dict[str, str]) -> None:
        if fields.get("url"):
            if not self.config.allow_urls:
                raise HTTPError(400, "this server does not fetch URLs (start it with --allow-urls)")
            check_url(fields["url"])

    async def _run(self, request: Request, item: VideoInput, work: Work, ticket: Ticket) -> dict[str, Any]:
        """service.run, given up (its ticket cancelled) when the client disconnects first."""
        task = asyncio.ensure_future(self.service.run(item, work, ticket))
        watch = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            ticket.cancelled = True
            task.cancel()
            raise
        finally:
            watch.cancel()
        if not task.done():
            ticket.cancelled = True
            task.cancel()
            raise ClientDisconnect()
        try:
            return task.result()
        except UsageError as exc:  # labels for a model without a text side, embed on a runtime without pre-logits
            raise HTTPError(400, str(exc)) from None
