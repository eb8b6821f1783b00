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


def unset_flags_false(params: list[click.Parameter]) -> list[click.Parameter]:
    """An on-only flag left unset (``--help``, ``--install-completion``) reads ``False``.

    Typer 0.29 coerces every value through a pydantic ``TypeAdapter`` except a flag's that is
    already a bool; these flags default to ``None``, so a command that is given neither paid
    for importing pydantic (about 60 ms) to learn that it was not asked for help.
    """
    for param in params:
        flag = isinstance(param, TyperOption) and param.is_flag and not param.secondary_opts
        if flag and param.default is None:
            param.default = False
    return params


class RoninCommand(TyperCommand):
    """A Typer command whose help shows what an operator types."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return unset_flags_false(super().get_params(ctx))

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

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return unset_flags_false(super().get_params(ctx))

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
