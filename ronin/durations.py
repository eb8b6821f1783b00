"""Durations as operators write them: ``90s``, ``15m``, ``12h``, ``7d`` (or plain seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

from ronin.errors import InvalidValue

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """A positive ``timedelta`` from ``text``; ``InvalidValue`` naming ``field`` otherwise."""
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidValue(f"{field} must look like 90s, 15m, 12h or 7d, not {text!r}", field=field)
    amount, unit = float(match[1]), match[2] or "s"
    try:
        duration = timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise InvalidValue(f"{field} {text!r} is too long", field=field) from None
    if duration <= timedelta(0):
        raise InvalidValue(f"{field} must be longer than zero", field=field)
    return duration
