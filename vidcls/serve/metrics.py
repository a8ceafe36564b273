"""/metrics: the server's counters in Prometheus's text format (prometheus_client, a registry of its own)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RATE_WINDOW_S = 30.0  # videos/s is counted over the last this many seconds


class Metrics:
    """Requests and errors by endpoint and status, queue depth, latency, views per forward pass, videos/s."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, capacity: int) -> None:
        disable_created_metrics()  # no *_created series: the text stays what a reader wants
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter("vidcls_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("vidcls_errors", "requests answered with an error, by reason",
                              ["endpoint", "reason"], registry=r)
        self.queue = Gauge("vidcls_queue_depth", "requests admitted and not yet answered (uploading, "
                           "decoding, waiting for or in a forward pass)", registry=r)
        Gauge("vidcls_queue_capacity", "requests admitted at once (--max-queue); 429 beyond",
              registry=r).set(capacity)
        self.latency = Histogram("vidcls_request_latency_seconds", "time from admission to answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.videos = Counter("vidcls_videos", "videos answered (classified or embedded)", ["outcome"], registry=r)
        self.batch = Histogram("vidcls_batch_views", "views per forward pass (dynamic batching)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.forward = Histogram("vidcls_forward_seconds", "time of one forward pass", buckets=LATENCY_BUCKETS,
                                 registry=r)
        Gauge("vidcls_videos_per_second", f"videos answered per second over the last {RATE_WINDOW_S:g} s",
              registry=r).set_function(self.rate)
        self.done: deque[float] = deque()
        self.lock = threading.Lock()

    def on_batch(self, views: int, seconds: float) -> None:
        """Called by the model thread after each forward pass."""
        self.batch.observe(views)
        self.forward.observe(seconds)

    def video_done(self, failed: bool) -> None:
        self.videos.labels("failed" if failed else "ok").inc()
        with self.lock:
            self.done.append(time.monotonic())

    def rate(self) -> float:
        now = time.monotonic()
        with self.lock:
            while self.done and self.done[0] < now - RATE_WINDOW_S:
                self.done.popleft()
            return len(self.done) / RATE_WINDOW_S

    def text(self) -> bytes:
        return generate_latest(self.registry)
