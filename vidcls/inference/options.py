"""The options of a run, typed and checked once: what predict, evaluate, embed and the timeline accept.

A frozen dataclass rather than `**options` read with `.get`: a misspelt keyword
(`topk=1`, `worker=0`) is a TypeError at the call instead of silently ignored, and a value that
would fail on every video is refused (UsageError) before a model is loaded or a video decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidcls import choices
from vidcls.choices import AUTO
from vidcls.errors import UsageError

# how the defaults read in `--help` and docs/cli.md; None means "the model's recipe" or "chosen by the engine"
DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 4096  # views per forward pass; top_k has no bound of its own: it is cut to the model's labels


@dataclass(frozen=True)
class RunOptions:
    """How to classify: top-k, the clip recipe (None: the model's own) and the engine's settings."""

    top_k: int = DEFAULT_TOP_K
    clips: int | None = None  # temporal clips per video
    crops: int | None = None  # spatial crops per clip: 1 or 3
    frames: int | None = None
    stride: int | None = None
    sampling: str | None = None  # "segment" or "dense"
    precision: str = AUTO  # "auto": bf16 where the device runs it natively, else fp32
    batch_size: int = DEFAULT_BATCH_SIZE  # views per forward pass
    workers: int | None = None  # decoding processes; None: chosen from the model's cost; 0: in this process
    threads: int | None = None  # torch threads of the model process; None: chosen with the workers
    runtime: str = "torch"  # or "openvino": the torch model converted once (vidcls.zoo.openvino_convert)
    # The classes of a model that reads label names (X-CLIP): "a,b,c", "@FILE" (one a line) or a list;
    # None: the model's own. prompt: how each name is read, "a video of {}" (None: the checkpoint's own).
    labels: tuple[str, ...] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", parse_labels(self.labels))
        if self.prompt is not None and "{}" not in self.prompt:
            raise UsageError(f"--prompt {self.prompt!r} has no {{}} where the label goes")
        most = choices.max_threads()
        within = {"top_k": (self.top_k, 1, None), "clips": (self.clips, 1, choices.MAX_CLIPS),
                  "frames": (self.frames, 1, choices.MAX_FRAMES), "stride": (self.stride, 1, choices.MAX_STRIDE),
                  "batch_size": (self.batch_size, 1, MAX_BATCH_SIZE), "workers": (self.workers, 0, most),
                  "threads": (self.threads, 1, most)}
        bad = [f"{name} must be >= {low}, got {value}" if value < low else f"{name} must be <= {high}, got {value}"
               for name, (value, low, high) in within.items()
               if value is not None and (value < low or (high is not None and value > high))]
        if bad:
            raise UsageError(", ".join(bad))
        if self.crops is not None and self.crops not in choices.CROPS:
            raise UsageError(f"crops must be 1 (centre) or 3 (left/centre/right), got {self.crops}")
        if self.sampling is not None and self.sampling not in choices.SAMPLINGS:
            raise UsageError(f"sampling must be one of {', '.join(choices.SAMPLINGS)}, got {self.sampling!r}")
        choices.check_precision(self.precision)
        choices.check_runtime(self.runtime)


@dataclass(frozen=True)
class TimelineOptions:
    """predict --timeline: window and hop in seconds (None: the model's clip span, half of it),
    smoothing over N windows, and the files to draw (plot PNG, annotated video, with the input's
    audio stream copied unless audio is False); with several videos each file name gets the
    video's name: timeline.png -> timeline-clip.png."""

    window_s: float | None = None
    hop_s: float | None = None
    smooth: int = 1
    plot: Path | None = None
    out_video: Path | None = None
    audio: bool = True

    def __post_init__(self) -> None:
        check_timeline_options(self.window_s, self.hop_s, self.smooth)

    @staticmethod
    def path_for(path: Path, video_name: str, several: bool) -> Path:
        return path.with_name(f"{path.stem}-{Path(video_name).stem}{path.suffix}") if several else path


@dataclass(frozen=True)
class EmbedOptions:
    """What a vector of `vidcls embed` is: the model's pre-logits averaged over a video's views
    (views "mean"), or one per view ("all"); over_time: one (or one per view) per window of
    window_s seconds every hop_s (None: as predict --timeline); normalize: unit vectors (after
    averaging)."""

    views: str = "mean"
    normalize: bool = False
    timeline: bool = False
    window_s: float | None = None
    hop_s: float | None = None

    def __post_init__(self) -> None:
        if self.views not in choices.VIEWS:
            raise UsageError(f"views must be one of {', '.join(choices.VIEWS)}, got {self.views!r}")
        check_timeline_options(self.window_s, self.hop_s, 1)

    @property
    def over_time(self) -> bool:
        """--window or --hop imply --timeline, as they do for predict."""
        return self.timeline or self.window_s is not None or self.hop_s is not None


def parse_labels(value: str | Sequence[str]) -> tuple[str, ...]:
    """Label names from `--labels`: "a,b,c" (comma-separated), "@FILE" (one name a line, blank lines
    and `#` lines skipped) or a list of names. Names are stripped; an empty one (",,", a trailing
    comma), a duplicate or no name at all is a UsageError: it would be a class no video can be."""
    if isinstance(value, str):
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--labels {value}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") \
                    from None
            names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        else:
            names = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence):
        names = [str(part).strip() for part in value]
    else:
        raise UsageError(f"labels must be a string or a list of names, not {type(value).__name__}")
    if not names:
        raise UsageError("--labels names no labels")
    if any(not name for name in names):
        raise UsageError(f"--labels has an empty name (in {value!r}): separate names by single commas")
    seen = {name for name in names if names.count(name) > 1}
    if seen:
        raise UsageError(f"--labels names {sorted(seen)[0]!r} twice")
    return tuple(names)


def check_timeline_options(window_s: float | None, hop_s: float | None, smooth: int) -> None:
    """Refuse window/hop/smooth values before a model is loaded or a video decoded."""
    if window_s is not None and not window_s > 0:
        raise UsageError(f"--window must be > 0 seconds, got {window_s}")
    if hop_s is not None and not hop_s > 0:
        raise UsageError(f"--hop must be > 0 seconds, got {hop_s}")
    if window_s is not None and hop_s is not None and hop_s > window_s:
        raise UsageError(f"--hop {hop_s} is longer than --window {window_s}: the windows would leave gaps")
    if smooth < 1:
        raise UsageError(f"--smooth must be >= 1 window, got {smooth}")
