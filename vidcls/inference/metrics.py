"""Accuracy of a model on labelled videos (`vidcls evaluate`): the numbers papers report.

The predictions come from the inference engine; this module matches the data's label names
to the model's, and turns per-video records (video, true label, top-k, error) into top-1,
top-5, mean class accuracy, per-class accuracy and a confusion matrix. Undecodable videos are
counted and listed, never part of an accuracy.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vidcls.errors import UsageError

OTHER = "(other)"  # confusion column for predictions outside the classes present in the data


def _normal(name: str) -> str:
    """Label spelling differences that do not change the class: case, _ and - for spaces."""
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


def match_labels(data_labels: Sequence[str], model_labels: Sequence[str], model_name: str) -> dict[str, str]:
    """{data label: model label}; a data label the model does not have is a UsageError naming it.

    Names match exactly, then up to case and _ / - / space; a data set labelled only with
    integers in range is read as class indices in the model's order (Kinetics lists).
    """
    exact = {label: label for label in model_labels}
    relaxed: dict[str, str] = {}
    for label in model_labels:
        relaxed.setdefault(_normal(label), label)
    wanted = sorted(set(data_labels))
    mapping = {d: exact.get(d) or relaxed.get(_normal(d)) for d in wanted}
    missing = [d for d, m in mapping.items() if m is None]
    if missing and all(d.isdigit() and int(d) < len(model_labels) for d in wanted):
        return {d: model_labels[int(d)] for d in wanted}
    if missing:
        first = missing[0]
        close = difflib.get_close_matches(first, list(model_labels), n=3, cutoff=0.5)
        hint = f" (closest: {', '.join(close)})" if close else ""
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UsageError(f"data label {first!r}{more} is not one of {model_name}'s {len(model_labels)} labels{hint}")
    return {d: m for d, m in mapping.items() if m is not None}


@dataclass
class EvalSummary:
    """What `vidcls evaluate` reports; per_class and the confusion matrix use `classes`, the
    model's labels present in the data, in the model's order."""

    model: str
    videos: int
    evaluated: int
    top1: float | None
    top5: float | None
    mean_class_accuracy: float | None
    classes: list[str]
    per_class: dict[str, dict[str, float | int | None]]
    confusion: list[list[int]]  # rows: true class; columns: predicted class, then OTHER
    failed: list[dict[str, str]] = field(default_factory=list)  # {video, error}
    zero_shot: bool = False  # the model read the class names as text (X-CLIP), never trained on this data's

    @property
    def title(self) -> str:
        how = f" (zero-shot: the {len(self.classes)} class names of the data as labels)" if self.zero_shot else ""
        return f"evaluation of {self.model}{how}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "zero_shot": self.zero_shot, "videos": self.videos, "evaluated": self.evaluated,
                "failed_count": len(self.failed), "top1": self.top1, "top5": self.top5,
                "mean_class_accuracy": self.mean_class_accuracy, "per_class": self.per_class,
                "confusion": {"classes": self.classes, "columns": [*self.classes, OTHER], "counts": self.confusion},
                "failed": self.failed}


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 6) if total else None


def summarize(records: Sequence[dict[str, Any]], model: str, model_labels: Sequence[str]) -> EvalSummary:
    """Accuracy over records with `label` (the true model label), `top_k` (labels, best first)
    and `error`; records with an error are listed as failed and left out of every accuracy."""
    present = {r["label"] for r in records}
    classes = [label for label in model_labels if label in present]
    column = {label: i for i, label in enumerate(classes)}
    confusion = [[0] * (len(classes) + 1) for _ in classes]
    hits1 = hits5 = 0
    per_class_total = dict.fromkeys(classes, 0)
    per_class_hits = dict.fromkeys(classes, 0)
    failed = []
    for record in records:
        if record.get("error") or not record.get("top_k"):
            failed.append({"video": record["video"], "error": record.get("error") or "no prediction"})
            continue
        truth = record["label"]
        ranked = [item["label"] for item in record["top_k"]]
        per_class_total[truth] += 1
        correct = ranked[0] == truth
        hits1 += correct
        per_class_hits[truth] += correct
        hits5 += truth in ranked[:5]
        confusion[column[truth]][column.get(ranked[0], len(classes))] += 1
    evaluated = len(records) - len(failed)
    per_class = {label: {"accuracy": _share(per_class_hits[label], per_class_total[label]),
                         "videos": per_class_total[label]} for label in classes}
    scored = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    mean_class = round(math.fsum(scored) / len(scored), 6) if scored else None
    return EvalSummary(model, len(records), evaluated, _share(hits1, evaluated), _share(hits5, evaluated),
                       mean_class, classes, per_class, confusion, failed)
