"""The `vidcls` command line: parse the options, call one library function, render its result.

Exit codes (docs/cli.md): 0 all done, 1 some input failed (the others were processed),
2 the command line itself is wrong. Errors are one line, with no traceback unless --debug
(accepted before or after the command).

Only typer, rich and vidcls's torch-free modules are imported here; each command imports
the library it calls, so `vidcls --help` and `vidcls --version` never load torch.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer vendors click since 0.2x; before, it used click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import ClickException

from vidcls import __version__
from vidcls.cli.help import VidclsCommand
from vidcls.cli.render import err, input_line, out
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


def usage_message(exc: Any) -> str:
    """A click usage error (bad value, unknown flag, missing option) as the text of one line,
    with the command whose --help tells more."""
    text = " ".join(exc.format_message().split())
    where = getattr(getattr(exc, "ctx", None), "command_path", None)
    return f"{text} (see `{where} --help`)" if where else text


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """warnings.showwarning for the command line: one `warning:` line, without Python's file path
    and source line (the position-embedding interpolation at another --frames, a library's notice)."""
    input_line("warning", "yellow", printable(first_line(str(message))))


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show Python warnings as show_warning does while a command runs (the library keeps Python's)."""
    original, warnings.showwarning = warnings.showwarning, show_warning
    try:
        yield
    finally:
        warnings.showwarning = original


class VidclsGroup(TyperGroup):
    """The command group: --debug anywhere on the line, not only before the command; usage errors
    (a bad value, an unknown flag, a missing option) as one `error:` line with exit 2, like every
    other error, instead of typer's box; Python warnings as `warning:` lines."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args:  # `vidcls` alone: the help, with the exit code of a usage error
            out.print(ctx.get_help(), highlight=False, markup=False)
            raise typer.Exit(2)
        return super().parse_args(ctx, _debug_first(args))

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        """Each command with the whole first sentence of its help (click cuts it to the width with ...)."""
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        with warnings_as_lines():
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except ClickException as exc:
                code = fail(usage_message(exc), exc.exit_code).exit_code
            except typer.Abort:
                code = fail("aborted", 1).exit_code
        sys.exit(code if isinstance(code, int) else 0)


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


app = typer.Typer(cls=VidclsGroup, add_completion=False, rich_markup_mode=None,
                  help="Classify videos with linear and quadratic video transformers.")


def command(name: str) -> Callable[[Callable], Callable]:
    """@command("predict"): register a command on `app` with vidcls's plain --help (cli.help)."""
    return app.command(name, cls=VidclsCommand)


_held: list[contextlib.ExitStack] = []  # what the running command holds until it ends (held_by_command)


def held_by_command(resource: contextlib.AbstractContextManager) -> None:
    """Enter `resource` (a lock on an output file) for the rest of the running command: it is left
    when the command ends, however it ends (guarded)."""
    _held[-1].enter_context(resource)


def guarded(command: Callable) -> Callable:
    """Turn library errors into one-line messages and exit codes (tracebacks only with --debug);
    what the command holds (held_by_command) is let go when it ends."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with contextlib.ExitStack() as stack:
                _held.append(stack)
                try:
                    return command(*args, **kwargs)
                finally:
                    _held.pop()
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
    app_for(sys.argv[1:])(prog_name="vidcls")


def app_for(args: list[str]) -> typer.Typer:
    """The app with only the command the line names: typer builds every registered command (its
    options' type hints and validators) before parsing, 0.15-0.3 s for all of vidcls's against a few
    ms for one, on every start. The whole app when the line names no command it knows (`--help`,
    `--version`, a typo, whose message lists the commands). The group's options are flags, so the
    first word not starting with `-` is the command."""
    name = next((arg for arg in args if not arg.startswith("-")), None)
    chosen = [info for info in app.registered_commands if info.name == name]
    if not chosen:
        return app
    single = typer.Typer(cls=VidclsGroup, add_completion=False, rich_markup_mode=None, help=app.info.help)
    single.registered_callback = app.registered_callback
    single.registered_commands = chosen
    return single


if __name__ == "__main__":
    sys.exit(main())
