"""Labels over time for a long video: the model's clip recipe applied to windows that cover it.

A window is a stretch of the video; inside it the model's own test recipe picks the frames
(`frames` x `stride` dense clips, or one frame per segment) and cuts its views, exactly as
`predict` does for a whole video, so a window as long as the video gives predict's answer
(the difference MMAction2 users meet between its long-video demo and its test script).

The whole video is read in ONE pass: the frame indices of all windows are known up front, the
decoder is asked for them in increasing chunks (one window's worth at a time), each frame is
decoded at most once and fitted to the model's size as it is decoded, and a window's views go
to the model as soon as its last frame is in, batched with the next windows'. Memory holds
the frames of about one window plus one batch of views, never the file; time follows the
number of windows (frames between them are skipped by seeking), not the file's length.

Windows are planned from what the stream holds, not from what its header claims: its packets
are counted first (demuxed, not decoded: one quick read of the file), and a header that says
10^15 ms, stamps a frame at 10^12 ms or counts 2^31-1 samples in a 16 KB file plans windows for
the dozen frames there are. A window or hop is at least one frame, and a video has at most
MAX_WINDOWS windows.

Each window "owns" the part of the video closer to its centre than to its neighbours'; owned
spans tile the video, so consecutive windows with the same top-1 merge into segments that
never overlap, and every frame of the video has exactly one current window (the annotated
video, vidcls.viz.overlay).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from vidcls.choices import AUTO
from vidcls.devices import choose_precision
from vidcls.errors import VidclsError, first_line
from vidcls.inference.batcher import MEAN_SOFTMAX, Batcher, Head, Scores
from vidcls.inference.engine import Recipe
from vidcls.inference.options import RunOptions, check_timeline_options
from vidcls.inference.predict import check_recipe, ready_model, top_k_labels
from vidcls.video.container import DecodeStats, VideoDecodeError
from vidcls.video.decode import FrameReader, count_packets, open_frames
from vidcls.video.sampling import sample_indices
from vidcls.video.transforms import crop_views, fitted_frame
from vidcls.zoo.modeldir import InputSpec
from vidcls.zoo.resolve import LoadedModel

SEGMENT_SAMPLING_WINDOW_S = 2.0  # default window of segment-sampled models, whose clip has no span of its own
MAX_WINDOWS = 100_000  # per video: 27 hours at a 1 s hop; each window is a forward pass and a row of scores


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One window: its span in seconds and the frame indices of its clips (clips x frames, flat)."""

    start_s: float
    end_s: float
    indices: tuple[int, ...]


def default_window_s(spec: InputSpec, fps: float) -> float:
    """The model's clip span at this frame rate (frames x stride / fps), or 2 s for segment sampling."""
    if spec.sampling == "dense":
        return spec.frames * spec.stride / fps
    return SEGMENT_SAMPLING_WINDOW_S


def window_and_hop(fps: float, spec: InputSpec, window_s: float | None, hop_s: float | None) -> tuple[float, float]:
    """The window and hop in seconds for a video at `fps`: as given, or the defaults (the clip's
    span, half of it) made at least one frame long. A window or hop given shorter than one frame
    is refused: windows that no frame separates would repeat one another, without bound."""
    frame_s = 1 / fps
    for flag, value in (("--window", window_s), ("--hop", hop_s)):
        if value is not None and value < frame_s:
            raise VidclsError(f"{flag} {value:g} s is shorter than one frame of this video ({frame_s:.4g} s at "
                              f"{fps:.4g} fps)")
    window = window_s or max(frame_s, default_window_s(spec, fps))
    hop = hop_s or max(frame_s, window / 2)
    check_timeline_options(window, hop, 1)
    return window, hop


def window_starts(duration_s: float, window_s: float, hop_s: float) -> list[float]:
    """Starts hop_s apart from 0; the last window ends at the video's end (it may overlap more).

    A video shorter than one window gets one window from 0.
    """
    if duration_s <= window_s:
        return [0.0]
    count = math.ceil((duration_s - window_s) / hop_s - 1e-9)
    return [k * hop_s for k in range(count)] + [duration_s - window_s]


def plan_windows(num_frames: int, fps: float, spec: InputSpec, window_s: float, hop_s: float,
                 clips: int) -> list[Window]:
    """Windows covering frames [0, num_frames) at `fps`, each with its clips' frame indices.

    A window's frames are the indices whose time falls in it; the recipe samples among them
    as sample_indices samples a whole video, offset to the window's first frame.
    """
    duration = num_frames / fps
    count = 1 if duration <= window_s else math.ceil((duration - window_s) / hop_s - 1e-9) + 1
    if count > MAX_WINDOWS:
        raise VidclsError(f"{count} windows of {window_s:g} s every {hop_s:g} s are more than the {MAX_WINDOWS} a "
                          f"video may have; give a longer --hop")
    windows = []
    for start in window_starts(duration, window_s, hop_s):
        end = min(duration, start + window_s)
        first = min(num_frames - 1, round(start * fps))
        count = max(1, min(num_frames, round(end * fps)) - first)
        clip_indices = sample_indices(count, spec.frames, spec.stride, clips, spec.sampling)
        windows.append(Window(start, end, tuple(first + i for clip in clip_indices for i in clip)))
    return windows


def owned_bounds(windows: Sequence[Window]) -> list[float]:
    """len(windows) + 1 times: window k owns [bounds[k], bounds[k + 1]), the times closer to its
    centre than to a neighbour's; the first starts at 0, the last ends at the video's end."""
    centres = [(w.start_s + w.end_s) / 2 for w in windows]
    middles = [(a + b) / 2 for a, b in pairwise(centres)]
    return [windows[0].start_s, *middles, windows[-1].end_s]


def smooth_probabilities(probs: torch.Tensor, windows: int) -> torch.Tensor:
    """Moving average of (W, classes) over `windows` consecutive windows, centred, shorter at the ends."""
    if windows <= 1:
        return probs
    before, after = (windows - 1) // 2, windows // 2
    sums = torch.cat([torch.zeros_like(probs[:1]), probs.cumsum(0)])
    rows = torch.arange(len(probs))
    low, high = (rows - before).clamp(min=0), (rows + after + 1).clamp(max=len(probs))
    return (sums[high] - sums[low]) / (high - low)[:, None]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Segment:
    """Consecutive windows with the same top-1 label, over their owned spans.

    score: that label's probability averaged over the segment, each window weighted by
    how long it owns.
    """

    start_s: float
    end_s: float
    label: str
    index: int
    score: float


@dataclass
class Timeline:
    """Per-window probabilities of one video, and what is derived from them.

    probs are the (smoothed) per-window class probabilities, softmax averaged over each
    window's views; stats counts what decoding them cost.
    """

    video: str
    model: str
    labels: list[str]
    fps: float
    num_frames: int
    windows: list[Window]
    probs: torch.Tensor  # (len(windows), classes)
    top_k: int = 5
    stats: DecodeStats | None = None

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def bounds(self) -> list[float]:
        return owned_bounds(self.windows)

    def window_at(self, time_s: float) -> int:
        """The index of the window that owns `time_s` (clamped to the video)."""
        return min(len(self.windows) - 1, max(0, bisect.bisect_right(self.bounds(), time_s) - 1))

    def top1(self) -> list[int]:
        return self.probs.argmax(dim=1).tolist()

    def segments(self) -> list[Segment]:
        """Runs of windows with the same top-1, merged; they tile the video without overlap."""
        bounds, top1 = self.bounds(), self.top1()
        segments = []
        start = 0
        for k in range(1, len(top1) + 1):
            if k < len(top1) and top1[k] == top1[start]:
                continue
            label = top1[start]
            spans = torch.tensor([bounds[j + 1] - bounds[j] for j in range(start, k)], dtype=torch.float64)
            scores = self.probs[start:k, label].double()
            score = float((spans * scores).sum() / spans.sum()) if spans.sum() > 0 else float(scores.mean())
            segments.append(Segment(bounds[start], bounds[k], self.labels[label], label, score))
            start = k
        return segments

    def to_json(self) -> dict[str, Any]:
        """{"timeline": [{start_s, end_s, top_k}], "segments": [{start_s, end_s, label, score}]}."""
        return {
            "timeline": [{"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
                          "top_k": top_k_labels(p, self.labels, self.top_k)}
                         for w, p in zip(self.windows, self.probs, strict=True)],
            "segments": [{"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3), "label": s.label,
                          "score": round(s.score, 6)} for s in self.segments()],
        }


SEGMENT_COLUMNS = ("start", "end", "duration", "label", "score")


def clock_text(seconds: float) -> str:
    """12.3 -> '0:12.3', 4000 -> '1:06:40.0': minutes always, hours when there are any."""
    tenths = round(seconds * 10)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    head = f"{hours}:{minutes:02d}" if hours else f"{minutes}"
    return f"{head}:{rest // 10:02d}.{rest % 10}"


def segment_text(segment: dict[str, Any]) -> tuple[str, ...]:
    """One segment of Timeline.to_json() as text under SEGMENT_COLUMNS, for a table."""
    start, end = segment["start_s"], segment["end_s"]
    return (clock_text(start), clock_text(end), f"{end - start:.1f} s", segment["label"], f"{segment['score']:.3f}")


def segment_rows(timeline: Timeline) -> list[tuple[str, ...]]:
    """The segments as text rows under SEGMENT_COLUMNS, for a table (rich, markdown, CSV)."""
    return [segment_text(s) for s in timeline.to_json()["segments"]]


# ----------------------------------------------------------------------------- the pass over the video


def _window_chunks(windows: Sequence[Window]) -> Iterator[tuple[int, list[int], int]]:
    """(window, the new indices to decode for it, the lowest index still needed after it).

    Windows are ordered by start, so a window's frames are complete once every index up to
    its highest is decoded; indices come in increasing chunks, as FrameReader.pick wants.
    """
    pending = sorted({i for w in windows for i in w.indices})
    lows = [min(w.indices) for w in windows]
    next_low = [math.inf] * len(windows)  # the lowest index of any later window
    for k in range(len(windows) - 2, -1, -1):
        next_low[k] = min(lows[k + 1], next_low[k + 1])
    done = 0
    for k, window in enumerate(windows):
        upto = bisect.bisect_right(pending, max(window.indices), lo=done)
        yield k, pending[done:upto], next_low[k]
        done = upto


def _clip_tensor(frames: dict[int, torch.Tensor], indices: Sequence[int], clips: int) -> torch.Tensor:
    """Fitted frames (3, h, w) at `indices` -> (clips, 3, T, h, w), copied row by row (no torch.stack)."""
    sample = frames[indices[0]]
    per_clip = len(indices) // clips
    out = torch.empty((clips, sample.shape[0], per_clip, *sample.shape[1:]), dtype=sample.dtype)
    for n, index in enumerate(indices):
        out[n // per_clip, :, n % per_clip] = frames[index]
    return out


def _window_values(reader: FrameReader, windows: Sequence[Window], spec: InputSpec, clips: int,
                   crops: int, batcher: Batcher) -> torch.Tensor:
    """(windows, ...) the batcher's value of each window's views (its Head's: the mean softmax for
    labels), decoding the file once; a window the model fails on (an error, non-finite outputs)
    fails the video with the batcher's reason."""
    frames: dict[int, torch.Tensor] = {}
    done: list[Scores] = []
    for k, wanted, keep_from in _window_chunks(windows):
        frames.update(reader.pick(wanted))
        clip = _clip_tensor(frames, windows[k].indices, clips)
        done.extend(batcher.add(k, crop_views(clip, spec.size, crops, spec.mean, spec.std)))
        for index in [i for i in frames if i < keep_from]:
            del frames[index]
    done.extend(batcher.flush())
    failed = next((d for d in done if d.error is not None), None)
    if failed is not None:
        start = windows[failed.owner].start_s
        raise VidclsError(f"window at {clock_text(start)}: {failed.error}")
    return torch.stack([d.value for d in done])


@dataclass(frozen=True)
class WindowPass:
    """One pass over a video's windows: its frame rate and length, the windows, and each window's value."""

    fps: float
    num_frames: int
    windows: list[Window]
    values: torch.Tensor  # (len(windows), ...): the Head's value of each window's views


def window_pass(source: str | Path, model: LoadedModel, device: torch.device, spec: InputSpec, *, clips: int,
                crops: int, window_s: float | None, hop_s: float | None, precision: str, batch_size: int,
                head: Head = MEAN_SOFTMAX, stats: DecodeStats | None = None,
                batcher: Batcher | None = None) -> WindowPass:
    """`spec`'s recipe (clips x crops views) on windows covering `source`, in one pass over the file,
    each window reduced by `head`: what the labels over time and the embeddings over time share.
    window_s / hop_s default as in timeline(); a file that cannot be decoded raises VideoDecodeError
    naming it. batcher: where the windows' views go (anything with Batcher's add and flush: `vidcls
    serve` hands in one that shares its forward passes with other requests); by default a Batcher of
    its own on `model` at `precision`, `batch_size` views per pass, reducing by `head`."""
    fit = partial(fitted_frame, side=spec.resize or spec.size, aspect=spec.aspect)
    try:
        with open_frames(source, stats if stats is not None else DecodeStats(), fit) as reader:
            # the header's length is a claim (a 16 KB file may say 10^15 ms): plan what the stream holds
            fps, num_frames = reader.info.fps, min(reader.info.num_frames, max(1, count_packets(source)))
            window, hop = window_and_hop(fps, spec, window_s, hop_s)
            windows = plan_windows(num_frames, fps, spec, window, hop, clips)
            if batcher is None:
                chosen = choose_precision(precision, device, exported=model.exported).precision
                batcher = Batcher(model.at_precision(chosen), device, chosen, batch_size, head)
            values = _window_values(reader, windows, spec, clips, crops, batcher)
    except VideoDecodeError as exc:
        raise VideoDecodeError(f"{source}: {exc}") from exc
    return WindowPass(fps, num_frames, windows, values)


def failure_reason(exc: BaseException, source: str | Path) -> str:
    """One line for why one video over time failed (labels or embeddings): a VidclsError's own
    message without the file's name (the record carries it), else the exception's type and first line."""
    if isinstance(exc, VidclsError):
        return first_line(str(exc).removeprefix(f"{source}: "))
    return f"timeline failed ({type(exc).__name__}: {first_line(exc)})"


def timeline(source: str | Path, model: LoadedModel | str, *, window_s: float | None = None,
             hop_s: float | None = None, smooth: int = 1, top_k: int = 5, clips: int | None = None,
             crops: int | None = None, frames: int | None = None, stride: int | None = None,
             sampling: str | None = None, device: str | torch.device | None = None, precision: str = AUTO,
             batch_size: int = 8, stats: DecodeStats | None = None, batcher: Batcher | None = None) -> Timeline:
    """Labels over time: the model's recipe on windows covering `source`, in one pass over the file.

    window_s defaults to default_window_s (the clip's span), hop_s to half the window (a hop
    longer than the window would leave gaps: UsageError). smooth averages the probabilities
    over that many consecutive windows before top-k and segments. clips / crops (the test views
    per window), frames / stride / sampling (the clip) default to the model's recipe; a clip the
    model cannot take is a UsageError before the file is opened. A file that cannot be decoded
    raises VideoDecodeError naming it; `stats` (a DecodeStats) receives the decoder's counters;
    `batcher` is window_pass's (the mean softmax per window).
    """
    RunOptions(top_k=top_k, clips=clips, crops=crops, frames=frames, stride=stride, sampling=sampling,
               precision=precision, batch_size=batch_size)
    check_timeline_options(window_s, hop_s, smooth)
    model, device = ready_model(model, device=device)
    recipe = Recipe.of(model.card.input, frames=frames, stride=stride, sampling=sampling, clips=clips, crops=crops)
    check_recipe(model.card, recipe.spec, model.exported)
    spec, clips, crops = recipe.spec, recipe.clips, recipe.crops
    stats = stats if stats is not None else DecodeStats()
    found = window_pass(source, model, device, spec, clips=clips or spec.clips, crops=crops or spec.crops,
                        window_s=window_s, hop_s=hop_s, precision=precision, batch_size=batch_size, stats=stats,
                        batcher=batcher)
    return Timeline(video=str(source), model=model.name, labels=model.labels, fps=found.fps,
                    num_frames=found.num_frames, windows=found.windows,
                    probs=smooth_probabilities(found.values, smooth), top_k=top_k, stats=stats)
