"""User-facing errors: one line, no traceback, a CLI exit code."""

from __future__ import annotations

import pickle
import unicodedata
from typing import Any


class VidclsError(Exception):
    """An error whose message is shown to the user as one line; exit_code is the CLI exit status."""

    exit_code = 1


class UsageError(VidclsError):
    """The command line itself is wrong (unknown model, bad flag value)."""

    exit_code = 2


def first_line(exc_or_text: BaseException | str) -> str:
    """The first non-empty line of an exception's message (or of a text), for one-line reports.

    An exception with an empty message is named by its type, so the report is never blank.
    """
    text = str(exc_or_text).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(exc_or_text).__name__ if isinstance(exc_or_text, BaseException) else ""


def printable(text: str) -> str:
    """`text` with newlines, control characters and terminal escapes spelled out (\\n, \\x1b, \\u202e).

    For names that come from users (file names, refs) inside one-line error messages: a newline
    would split the line and an escape sequence would reach the terminal raw. Every character
    of Unicode category C (controls, format characters such as bidi overrides, unassigned) is
    replaced by its Python escape; everything else, backslashes included, stays as it is.
    """
    return "".join(repr(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in str(text))


def check_finite(tensor: Any, what: str) -> None:
    """Raise a VidclsError naming `what` when a tensor holds NaN or infinity.

    A model's non-finite output is no answer (its softmax is NaN and JSON cannot hold it),
    so it is reported as an error of that input instead. Typed loosely so this module stays
    free of torch: any torch.Tensor works.
    """
    if not bool(tensor.isfinite().all()):
        raise VidclsError(f"{what} is not finite (NaN or infinity)")


def unreadable_reason(exc: BaseException) -> str:
    """Why a pickle checkpoint could not be read by torch.load(weights_only=True), in a few words: torch's
    own message runs to six lines, with terminal escapes, and advises loading the file with
    weights_only=False, which would run whatever code it holds: that advice is never passed on."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain data, and was refused without running them"
    if isinstance(exc, EOFError):
        return "the file is truncated"
    return first_line(exc)
