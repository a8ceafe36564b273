"""User-facing errors: one line, no traceback, a CLI exit code."""


class VidclsError(Exception):
    """An error whose message is shown to the user as one line; exit_code is the CLI exit status."""

    exit_code = 1


class UsageError(VidclsError):
    """The command line itself is wrong (unknown model, bad flag value)."""

    exit_code = 2
