"""Refuse what PostgreSQL cannot store before it reaches SQL.

``text`` and ``jsonb`` refuse the NUL character, UTF-8 cannot carry a lone surrogate, and
``jsonb`` has no NaN or Infinity. Any of these inside one hostile node's document would fail a
whole batch of sightings; caught here, it costs only that one value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ronin.errors import UnstorableValue

# Deeply nested JSON makes PostgreSQL refuse it ("stack depth limit exceeded") long before
# it is useful; no protocol value nests anywhere near this deep.
MAX_JSON_DEPTH = 64


def check_text(value: str, field: str) -> None:
    """Raise ``UnstorableValue`` for a string PostgreSQL's text types would refuse."""
    if _plain_text(value):
        return
    if "\x00" in value:
        raise UnstorableValue(
            f"{field} contains a NUL character, which PostgreSQL cannot store", field=field
        )
    raise UnstorableValue(
        f"{field} contains a lone surrogate, which is not valid UTF-8", field=field
    )


def check_json(value: Any, field: str, depth: int = 0) -> None:
    """Raise ``UnstorableValue`` for a JSON value ``jsonb`` would refuse."""
    if not _plainly_storable(value, depth):
        _refuse_unstorable(value, field, depth)


def _plainly_storable(value: Any, depth: int) -> bool:
    """True for JSON as a parser makes it (dicts, lists, str, int, float, bool, None) that
    ``jsonb`` stores; False for anything else, which ``_refuse_unstorable`` then judges.

    The walk every job submission and every sighting pays: no field names are built, they
    are only needed for a refusal (2.4 -> 1.0 us for a job's params).
    """
    if depth > MAX_JSON_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        return _plain_text(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _plain_text(key):
                return False
            if not _plainly_storable(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_plainly_storable(item, depth + 1) for item in value)
    if kind is float:
        return math.isfinite(value)
    return kind is int or kind is bool or value is None


def _plain_text(value: str) -> bool:
    """No NUL, and valid UTF-8 (ASCII always is)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_unstorable(value: Any, field: str, depth: int) -> None:
    """``check_json``'s judge, naming the field at fault (and passing what is storable, such as
    a tuple or another Mapping, that the fast walk leaves to it)."""
    if depth > MAX_JSON_DEPTH:
        raise UnstorableValue(f"{field} nests deeper than {MAX_JSON_DEPTH} levels", field=field)
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UnstorableValue(f"{field} holds {value}, which JSON cannot carry", field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnstorableValue(f"{field} has a non-string key {key!r}", field=field)
            check_text(key, f"a key of {field}")
            _refuse_unstorable(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            _refuse_unstorable(item, f"{field}[{index}]", depth + 1)
    else:
        raise UnstorableValue(
            f"{field} holds a {type(value).__name__}, which is not JSON", field=field
        )
