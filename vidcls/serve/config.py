"""What a `vidcls serve` process is started with: the model, the engine's settings and the limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from vidcls.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeConfig:
    """One server: a model REF and how it runs (run_options: RunOptions' fields but top_k, which
    each request gives), where it listens, and the limits that keep it alive under load."""

    model: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    weights: str | None = None
    device: str = "auto"
    run_options: dict[str, Any] = field(default_factory=dict)
    max_upload_mb: float = 200.0  # 413 beyond it, counted while the body streams in
    max_queue: int = 64  # requests admitted at once (uploading, waiting or running); 429 beyond
    timeout_s: float = 120.0  # per request, upload included: 504 beyond
    max_wait_ms: float = 10.0  # how long a partial batch waits for more views
    allow_urls: bool = False  # `url` field fetched over http(s) only
    grace_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    timeline_threads: int = 2  # timelines decode in threads of the server (their windows share the model)
    access_log: bool = False  # uvicorn's line per request on stderr (about 4 ms of CPU each on a busy 2-core machine)

    def __post_init__(self) -> None:
        checks = {"--port": (self.port, 0), "--max-upload-mb": (self.max_upload_mb, 1e-6),
                  "--max-queue": (self.max_queue, 1), "--timeout": (self.timeout_s, 1e-3),
                  "--max-wait-ms": (self.max_wait_ms, 0), "--grace": (self.grace_s, 0),
                  "--timeline-threads": (self.timeline_threads, 1)}
        bad = [f"{name} must be >= {low:g}, got {value}" for name, (value, low) in checks.items() if value < low]
        if self.port > 65535:
            bad.append(f"--port must be <= 65535, got {self.port}")
        if bad:
            raise UsageError(", ".join(bad))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def exposure_warning(self) -> str | None:
        """A warning when the server listens beyond this machine (0.0.0.0, ::, a public address)."""
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:  # a name: localhost is local, anything else may not be
            local = self.host == "localhost"
        else:
            local = address.is_loopback
        if local:
            return None
        where = "every network interface" if self.host in ("0.0.0.0", "::") else self.host
        return (f"listening on {where}: anyone who can reach this machine can send videos to the model; "
                "there is no authentication (put a reverse proxy with TLS and auth in front)")
