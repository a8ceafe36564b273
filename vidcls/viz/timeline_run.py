"""`predict --timeline` for one video: its timeline, top-k and drawings (a plot, an annotated video).

Shared by predict_run (vidcls.api) and `vidcls serve` (which passes its engine's batcher); a file
that cannot be drawn is that video's error, naming the file, never the input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vidcls.errors import VidclsError, first_line, printable
from vidcls.inference.batcher import Batcher
from vidcls.inference.engine import Recipe
from vidcls.inference.options import RunOptions, TimelineOptions
from vidcls.inference.predict import Prediction, top_k_labels
from vidcls.inference.timeline import failure_reason, timeline
from vidcls.video.inputs import VideoInput
from vidcls.zoo.resolve import LoadedModel


def timeline_prediction(item: VideoInput, loaded: LoadedModel, target: torch.device, options: RunOptions,
                        recipe: Recipe, over_time: TimelineOptions, targets: dict[str, dict[str, Path]] | None = None,
                        batcher: Batcher | None = None) -> Prediction:
    """One video's Prediction with its timeline (vidcls.inference.timeline: one pass over the file), as
    predict --timeline writes it; a video that fails gets the error. A plot or annotated video (`targets`:
    timeline_outputs; None: none) that cannot be written is that video's error too, naming the file, not
    the input; the labels are kept. batcher: the timeline's (None: its own; `vidcls serve` shares its engine's)."""
    start = time.perf_counter()
    result = Prediction(video=item.name, model=loaded.name, error=item.error)
    if item.error is not None:  # known before decoding (a folder that cannot be listed, stdin not kept)
        return result
    try:
        found = timeline(item.source, loaded, window_s=over_time.window_s, hop_s=over_time.hop_s,
                         smooth=over_time.smooth, top_k=options.top_k, clips=recipe.clips, crops=recipe.crops,
                         frames=recipe.spec.frames, stride=recipe.spec.stride, sampling=recipe.spec.sampling,
                         device=target, precision=options.precision, batch_size=options.batch_size,
                         batcher=batcher)
    except Exception as exc:  # noqa: BLE001 - the decoder, the model: one video's failure
        result.error = failure_reason(exc, item.source)
    else:
        result.top_k = top_k_labels(found.probs.mean(dim=0), loaded.labels, options.top_k)
        result.timeline = found.to_json()
        result.frames_used = sum(len(window.indices) for window in found.windows)
        result.warnings = found.stats.warnings()
        result.error = draw_outputs(item, found, loaded.name, over_time, targets or {})
    result.processing_s = round(time.perf_counter() - start, 4)
    return result


def draw_outputs(item: VideoInput, found: Any, model_name: str, over_time: TimelineOptions,
          targets: dict[str, dict[str, Path]]) -> str | None:
    """Write a video's plot and annotated video; the reason one could not be written, naming it, or None."""
    from vidcls.viz.overlay import write_annotated_video
    from vidcls.viz.timeline import plot_timeline

    for option, by_video in targets.items():
        path = by_video[item.name]
        try:
            if option == "--plot":
                plot_timeline(found, path, title=f"{model_name}: {item.name}")
            else:
                write_annotated_video(item.source, found, path, audio=over_time.audio)
        except OSError as exc:
            return f"cannot write {option} {printable(str(path))}: {exc.strerror or first_line(exc)}"
        except VidclsError as exc:  # the encoder's own line names the file, or the source failed to decode again
            return failure_reason(exc, item.source)
        except Exception as exc:  # noqa: BLE001 - matplotlib or the encoder on one video
            return f"cannot write {option} {printable(str(path))} ({type(exc).__name__}: {first_line(exc)})"
    return None
