"""Stopping a training run at a safe point: SIGINT / SIGTERM become a request the loop honours
after its next optimizer step or validation batch, so the checkpoint it writes is whole.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class GracefulStop:
    """SIGINT / SIGTERM ask the loop to stop at its next safe point and checkpoint.

    The loop checks `requested` after each optimizer step and each validation batch; a
    second signal interrupts at once. Handlers can only be installed from the main thread;
    elsewhere (a notebook's worker thread) signals keep their default behaviour.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
