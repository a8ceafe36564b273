"""`--help` as plain text that reads at 80 columns: every flag whole, prose re-flowed, plain metavars.

typer's rich help squeezes six columns into the terminal, so at 80 columns it cut flag names
(`--max-bad-fracti…`), wrapped descriptions a word per line and showed `<bool>`, `<list[str]>`
and `{ref}`. Here click's own formatter lays out each command instead: a flag and its value on
the left, the help re-flowed to the width on the right (on the next line when the flag is
long), one section per `rich_help_panel`, and metavars that say what a value is (N, FILE).
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

from typer.core import TyperCommand

# a value's metavar by its Python type, where the option names none of its own
TYPE_METAVARS = {int: "N", float: "FLOAT", str: "TEXT", Path: "PATH"}


def type_metavar(hint: Any) -> str:
    """N, FLOAT, TEXT or PATH for an option annotated `hint` (typer's defaults read `<int range>`,
    `<list[str]>`): Annotated, Optional and list are looked through to the value's own type."""
    while typing.get_origin(hint) in (typing.Annotated, typing.Union, types.UnionType, list):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return TYPE_METAVARS.get(hint, "VALUE")


def argument_term(param: Any) -> str:
    """VIDEO... for a repeatable argument, REF for one (its metavar, else its name)."""
    return (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")


class VidclsCommand(TyperCommand):
    """A command whose --help is click's plain layout (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hints = typing.get_type_hints(inspect.unwrap(self.callback), include_extras=True) if self.callback else {}
        for param in self.params:
            if param.param_type_name == "option" and not param.is_flag and param.metavar is None:
                param.metavar = type_metavar(hints.get(param.name))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] VIDEO...`: required arguments bare, optional ones in brackets."""
        arguments = [p for p in self.get_params(ctx) if p.param_type_name == "argument"]
        return [self.options_metavar or "[OPTIONS]",
                *(argument_term(p) if p.required else f"[{argument_term(p)}]" for p in arguments)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then Options, then one section per help panel, each a definition list."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                sections.setdefault("Arguments", []).append((argument_term(param), param.help or ""))
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        for title in sorted(sections, key=lambda t: {"Arguments": 0, "Options": 1}.get(t, 2)):
            with formatter.section(title):
                formatter.write_dl(sections[title])
