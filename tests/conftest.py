"""Shared fixtures: tiny videos written with PyAV whose frames show their own index."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

# fixture modules: http_helpers (the 127.0.0.1 `server`), hub_helpers (`hub_cache`)
pytest_plugins = ["http_helpers", "hub_helpers"]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (the default: `-n auto` in pyproject.toml) each worker runs one torch thread.

    Workers already use every core; torch's own threads on top (and those of the processes the
    tests start, through OMP_NUM_THREADS) would oversubscribe them, and a multi-threaded kernel
    on an oversubscribed machine waits at every barrier for its descheduled threads (up to 10x
    slower on tiny models).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


# A frame's index is drawn as three vertical grey bands, one base-16 digit each (0..4095);
# levels 16 apart survive lossy H.264 and the RGB<->YUV round trip.
_DIGITS = 3


def index_frame(index: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) frame that encodes `index` (width >= 3 * 8 px)."""
    frame = np.zeros((height, width, 3), np.uint8)
    band = width // _DIGITS
    for d in range(_DIGITS):
        digit = (index >> (4 * (_DIGITS - 1 - d))) & 15
        frame[:, d * band:(d + 1) * band] = 16 * digit + 8
    return frame


def decode_index(frame: torch.Tensor) -> int:
    """Inverse of index_frame, reading the middle of each band of a (H, W, 3) frame."""
    height, width = frame.shape[:2]
    band = width // _DIGITS
    index = 0
    for d in range(_DIGITS):
        patch = frame[height // 4:3 * height // 4, d * band + band // 4:(d + 1) * band - band // 4]
        index = 16 * index + round((patch.float().mean().item() - 8) / 16)
    return index


def encode_video(path: Path, num_frames: int, *, width: int = 48, height: int = 32, fps: int = 10,
                 codec: str = "libx264", options: dict[str, str] | None = None,
                 pts_ms: Sequence[int] | None = None, rotation_cw: int = 0,
                 container_options: dict[str, str] | None = None,
                 frame: Callable[[int, int, int], np.ndarray] = index_frame) -> Path:
    """Write `num_frames` frames of `frame(i, height, width)`; lossless H.264, GOP 10 by default.

    pts_ms gives irregular timestamps (variable frame rate); rotation_cw stores a display
    matrix asking players to turn the picture clockwise.
    """
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0", "g": "10"} if options is None else options
        if rotation_cw:
            stream.set_display_rotation(-rotation_cw)  # PyAV's angle is counter-clockwise
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            picture = av.VideoFrame.from_ndarray(frame(i, height, width), format="rgb24")
            if pts_ms is not None:
                picture.pts, picture.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


@pytest.fixture
def ctrl_c_after() -> Callable[[int], Callable[[object], None]]:
    """ctrl_c_after(n): an on_result callback that raises KeyboardInterrupt at the n-th result,
    as Ctrl-C in the middle of a run would."""

    def make(count: int) -> Callable[[object], None]:
        seen = []

        def on_result(result: object) -> None:
            seen.append(result)
            if len(seen) == count:
                raise KeyboardInterrupt

        return on_result

    return make


@pytest.fixture(scope="session")
def vidcls_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vidcls-home")


@pytest.fixture(autouse=True)
def packaged_zoo_only(monkeypatch: pytest.MonkeyPatch, vidcls_home: Path) -> None:
    """The tests see the zoo vidcls ships (a VIDCLS_ZOO of the user's environment is ignored)
    and a cache of their own: nothing is read from or written to the user's ~/.cache/vidcls
    (the benchmark's roofline record, downloads), unless a test sets VIDCLS_HOME itself."""
    monkeypatch.delenv("VIDCLS_ZOO", raising=False)
    monkeypatch.setenv("VIDCLS_HOME", str(vidcls_home))


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """make_video(name, num_frames, **encode_video options) -> path of a video in tmp_path."""

    def make(name: str, num_frames: int, **options) -> Path:
        return encode_video(tmp_path / name, num_frames, **options)

    return make


@pytest.fixture
def frame_index() -> Callable[[torch.Tensor], int]:
    """The index drawn into a decoded frame by index_frame (a fixture, so tests need not import conftest)."""
    return decode_index


@pytest.fixture
def attend_by_hand() -> Callable[..., torch.Tensor]:
    """attend_by_hand(attn, q, k, v): an `Attention`'s softmax attention written out head by head.

    q (Nq, C), k and v (Nk, C) are full-width (heads side by side); returns attn.proj of the
    heads' outputs, (Nq, C). The plain reference the families' batched attention is checked against.
    """

    def attend(attn: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        width = q.shape[-1] // attn.num_heads
        outputs = []
        for head in range(attn.num_heads):
            cols = slice(head * width, (head + 1) * width)
            weights = torch.softmax(q[:, cols] @ k[:, cols].T / width ** 0.5, dim=-1)
            outputs.append(weights @ v[:, cols])
        return attn.proj(torch.cat(outputs, dim=-1))

    return attend


@pytest.fixture(scope="session")
def some_file(tmp_path_factory) -> str:
    """An existing file that is no video: a command given it gets as far as loading the model (an input
    list of missing files alone is refused before that), and the video itself then fails."""
    path = tmp_path_factory.mktemp("inputs") / "clip.mp4"
    path.write_bytes(b"0")
    return str(path)
