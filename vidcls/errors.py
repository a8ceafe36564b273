"""User-facing errors: one line, no traceback, a CLI exit code."""


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
    """`text` with control characters escaped (\\n, \\x1b, ...), so a hostile file name can neither
    split an error line in two nor send escape sequences to the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
