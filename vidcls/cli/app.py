"""The `vidcls` command line: parse the options, call one library function, render its result.

Exit codes (docs/cli.md): 0 all done, 1 some input failed (the others were processed),
2 the command line itself is wrong. Errors are one line, with no traceback unless --debug
(accepted before or after the command).

Only typer, rich and vidcls's torch-free modules are imported here; each command imports
the library it calls, so `vidcls --help` and `vidcls --version` never load torch.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from vidcls import __version__
from vidcls.cli.render import err, out
from vidcls.errors import VidclsError, first_line, printable

_state = {"debug": False}


def fail(message: str, code: int) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise.

    The message goes through `printable`, so a name holding a newline or a terminal escape
    can neither split the line nor reach the terminal raw.
    """
    err.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _debug_first(args: list[str]) -> list[str]:
    """Move every --debug (before a `--`) to the front, where the group's own option parses it."""
    end = args.index("--") if "--" in args else len(args)
    rest = [arg for arg in args[:end] if arg != "--debug"]
    return ["--debug"] * (len(rest) < end) + rest + args[end:]


class VidclsGroup(TyperGroup):
    """The command group; it takes --debug anywhere on the line, not only before the command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _debug_first(args))


def checked(option: str, pattern: str, metavar: str) -> dict[str, Any]:
    """typer.Option arguments for a value from a fixed vocabulary: --help shows `metavar`,
    and a value not matching `pattern` is refused while parsing, in one line (exit 2)."""

    def check(value: Any) -> Any:
        if value is not None and not re.fullmatch(pattern, str(value)):
            raise fail(f"{option} must be {metavar}, got {str(value)!r}", 2)
        return value

    return {"metavar": metavar, "callback": check}


def one_of(option: str, values: Any) -> dict[str, Any]:
    """checked() for a list of values (the vocabularies of vidcls.choices)."""
    names = [str(v) for v in values]
    return checked(option, "|".join(map(re.escape, names)), "|".join(names))


app = typer.Typer(cls=VidclsGroup, add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Classify videos with linear and quadratic video transformers.")


def guarded(command: Callable) -> Callable:
    """Turn library errors into one-line messages and exit codes (tracebacks only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except VidclsError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as exc:  # noqa: BLE001 - the contract is one line, not a traceback
            if _state["debug"]:
                raise
            raise fail(f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for details)",
                       1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"vidcls {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show Python tracebacks on errors (before or after the command).",
    )] = False,
) -> None:
    """vidcls: video classification with a model zoo of video transformers (docs/cli.md)."""
    _state["debug"] = debug


def main() -> None:
    """Console-script entry point."""
    app(prog_name="vidcls")


if __name__ == "__main__":
    sys.exit(main())
