"""Run the server: load the model, start the engine, listen, and on SIGTERM drain and exit 0.

The socket is bound here before uvicorn starts (so --port 0 takes a free port and the startup line
names it). SIGTERM or Ctrl-C: uvicorn stops accepting connections, lets the requests in flight
finish for up to --grace seconds (then cancels them: their spool files are removed as always),
and returns; the engine is stopped after the last answer, the spool folder removed, and the
process exits 0 (uvicorn's own handler re-raises the signal afterwards, which would kill the
process with it: this server's handler does not). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from vidcls.serve.app import Server
from vidcls.serve.config import ServeConfig
from vidcls.serve.engine import start_forkserver
from vidcls.serve.metrics import Metrics
from vidcls.serve.service import Service
from vidcls.serve.uploads import Spool

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with /health answering draining once a stop signal came, and no re-raised signal."""

    def __init__(self, config: uvicorn.Config, state: Server, early: list[int]) -> None:
        super().__init__(config)
        self.state, self.early = state, early

    def handle_exit(self, sig: int, frame: object) -> None:
        self.state.draining = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        for sig in self.early:  # a stop asked for while the model was loading: start and stop at once
            self.handle_exit(sig, None)
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        from vidcls.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: ServeConfig, on_ready: Callable[[str, Service], None] = lambda url, service: None) -> None:
    """Serve until SIGTERM or Ctrl-C; on_ready(url, service) once the model is loaded and the socket listens."""
    early: list[int] = []  # SIGTERM before uvicorn runs: remembered, then a clean stop (exit 0)
    previous = {sig: signal.signal(sig, lambda sig, frame: early.append(sig)) for sig in STOP_SIGNALS[1:]}
    if config.run_options.get("workers") != 0:
        start_forkserver()  # the decoding workers' parent imports torch while this process loads the model
    metrics = Metrics(config.max_queue)
    service = Service(config, on_batch=metrics.on_batch)  # the model: a bad REF fails here, before listening
    spool = Spool()
    sock = None
    try:
        service.start()
        state = Server(service, spool, metrics)
        sock = bind(config.host, config.port)
        uv_config = uvicorn.Config(state.app(), lifespan="off", timeout_graceful_shutdown=config.grace_s,
                                   log_level="info", access_log=config.access_log, server_header=False)
        server = _Uvicorn(uv_config, state, early)
        on_ready(url_of(sock), service)
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sock is not None:
            sock.close()
        service.stop()
        spool.close()
