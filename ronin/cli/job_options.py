"""The options of a job's params, shared by the commands that make one (discover, schedules
add): their bounds and help come from the params' one description, ``param_fields.FIELDS``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ronin.discovery.param_fields import (
    CONCURRENCY,
    DEPTH,
    MDNS_WINDOW,
    PORTS,
    PROTOCOLS_FIELD,
    RATE,
    ParamField,
)


def option(field: ParamField) -> Any:
    """The option of ``field``: a list's bounds are its items' (each ``--port`` is a port)."""
    if field.json_type == "array":
        return typer.Option(min=field.item_low, max=field.item_high, help=field.help)
    return typer.Option(min=field.low, max=field.high, help=field.help)


Depth = Annotated[int, option(DEPTH)]
Ports = Annotated[list[int] | None, option(PORTS)]
Protocols = Annotated[list[str] | None, option(PROTOCOLS_FIELD)]
Rate = Annotated[float | None, option(RATE)]
Concurrency = Annotated[int | None, option(CONCURRENCY)]
MdnsWindow = Annotated[float | None, option(MDNS_WINDOW)]
