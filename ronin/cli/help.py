"""Help as an operator reads it: ``TARGET`` in the usage line, and no type after a flag.

Typer's Rich help panel prints a flag's type (``--wait <bool>``) as if the flag took a value,
and its usage line wraps a required argument in braces (``{target}``), which reads as a
choice. Every ``ronin`` command and group is built from the classes here instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer import _click as click  # the Click that Typer carries (pyproject: typer>=0.29)
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def usage_name(argument: TyperArgument) -> str:
    """``TARGET``, ``[TARGET]`` if optional, ``TARGET...`` if it takes several."""
    name = argument.metavar or (argument.name or "").upper()
    if argument.nargs != 1:
        name += "..."
    return name if argument.required else f"[{name}]"


def hide_flag_types(params: list[click.Parameter]) -> None:
    """A flag takes no value: give it an empty metavar, so no type is printed after it."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class RoninCommand(TyperCommand):
    """A Typer command whose help shows what an operator types."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(usage_name(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)


class RoninGroup(TyperGroup):
    """A Typer group whose help prints no type after a flag."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)


class RoninTyper(typer.Typer):
    """``typer.Typer`` building its group and commands from the classes above."""

    def __init__(self, *, cls: type[RoninGroup] = RoninGroup, **kwargs: Any) -> None:
        super().__init__(cls=cls, **kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or RoninCommand, **kwargs)
