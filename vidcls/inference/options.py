"""The options of a run, typed and checked once: what predict, evaluate, embed and the timeline accept.

A frozen dataclass rather than `**options` read with `.get`: a misspelt keyword
(`topk=1`, `worker=0`) is a TypeError at the call instead of silently ignored, and a value that
would fail on every video is refused (UsageError) before a model is loaded or a video decoded.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vidcls import choices
from vidcls.choices import AUTO
from vidcls.errors import UsageError, printable
from vidcls.video.inputs import VideoInput

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
    video's name: timeline.png -> timeline-clip.png, made unique from the video's folders when two
    videos share a name (paths_for)."""

    window_s: float | None = None
    hop_s: float | None = None
    smooth: int = 1
    plot: Path | None = None
    out_video: Path | None = None
    audio: bool = True

    def __post_init__(self) -> None:
        check_timeline_options(self.window_s, self.hop_s, self.smooth)

    @staticmethod
    def paths_for(path: Path, video_names: Sequence[str]) -> list[Path]:
        """The file each video's plot or annotated video goes to: `path` itself for one video; with
        several, FILE-<video>.SUFFIX, one per video, never the same twice (unique_labels)."""
        if len(video_names) <= 1:
            return [path] * len(video_names)
        return [path.with_name(f"{path.stem}-{label}{path.suffix}") for label in unique_labels(video_names)]

    def outputs(self) -> dict[str, Path]:
        """The files asked for, by the option that names them."""
        return {option: path for option, path in (("--plot", self.plot), ("--out-video", self.out_video))
                if path is not None}


def _name_parts(name: str) -> list[str]:
    """A video's name as path components (a URL's path; stdin is `stdin`), without root or dots."""
    if name == "-":
        return ["stdin"]
    if "://" in name:
        parsed = urllib.parse.urlsplit(name)
        parts = [parsed.netloc, *PurePosixPath(parsed.path).parts]
    else:
        parts = list(Path(name).parts)
    return [part for part in parts if part not in ("", "/", ".", "..") and not part.endswith(os.sep)] or ["video"]


def unique_labels(video_names: Sequence[str]) -> list[str]:
    """A file-name label per video: its stem, with as many of its folders as it takes to tell apart
    videos of the same name (a/clip.mp4, b/clip.mp4 -> a_clip, b_clip), then its suffix; a name
    given twice gets -2, -3, ... in input order. Two videos never get the same label."""
    parts = [_name_parts(name) for name in video_names]
    labels = [Path(p[-1]).stem or p[-1] for p in parts]
    for depth in range(1, max(len(p) for p in parts)):
        clashing = {label for label, n in Counter(labels).items() if n > 1}
        if not clashing:
            break
        labels = [("_".join([*p[-1 - depth:-1], Path(p[-1]).stem or p[-1]]) if label in clashing else label)
                  for label, p in zip(labels, parts, strict=True)]
    clashing = {label for label, n in Counter(labels).items() if n > 1}
    labels = [label + "_" + Path(p[-1]).suffix.lstrip(".") if label in clashing and Path(p[-1]).suffix else label
              for label, p in zip(labels, parts, strict=True)]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


def check_writable(option: str, path: Path) -> None:
    """Refuse (UsageError) an output file that cannot be written, before the run: its nearest
    existing folder must be a folder where this process can create a file (it is created below that)."""
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if os.path.isdir(path):
        raise UsageError(f"{option} {printable(str(path))}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {printable(str(path))}: {printable(str(folder))} is not a folder")
    try:  # a file made and removed: what permissions, a read-only filesystem or /proc really allow
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {printable(str(path))}: cannot write in {printable(str(folder))} "
                         f"({exc.strerror or exc})") from None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (links followed); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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


def timeline_outputs(over_time: TimelineOptions, videos: Sequence[VideoInput]) -> dict[str, dict[str, Path]]:
    """The plot and annotated-video file of each video (by option, then by video name), named over
    all the inputs (TimelineOptions.paths_for), so that a resumed or sharded run names them alike.
    Refused before the run (UsageError): a file that would overwrite one of the inputs, and a
    place that cannot be written (the run would fail every video there)."""
    names = [video.name for video in videos]
    targets = {}
    for option, path in over_time.outputs().items():
        paths = TimelineOptions.paths_for(path, names)
        for target in dict.fromkeys(paths):
            check_writable(option, target)
            for video in videos:
                if same_file(target, video.source):
                    raise UsageError(f"{option} {printable(str(target))} is the input {printable(video.name)}: "
                                     f"writing it would destroy the input; choose another name")
        targets[option] = dict(zip(names, paths, strict=True))
    return targets
