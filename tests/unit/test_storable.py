"""Values PostgreSQL would refuse are caught, and named, before they reach SQL."""

from __future__ import annotations

from typing import Any

import pytest

from ronin.errors import UnstorableValue
from ronin.store.storable import MAX_JSON_DEPTH, check_json, check_text


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("a\x00b", "meta"),
        ({"k": "v\x00"}, "meta.k"),
        ({"k\x00": 1}, "a key of meta"),
        ([1, 2, "\ud83d"], "meta[2]"),
        ({"rt": float("inf")}, "meta.rt"),
        ({"rt": float("nan")}, "meta.rt"),
        ({1: "non-string key"}, "meta"),
        ({"raw": b"bytes"}, "meta.raw"),
        (nested(MAX_JSON_DEPTH + 2), "meta"),
        ({"ok": ["é", {"\udc80": 1}]}, "a key of meta.ok[1]"),
        ((1, {"t": "\x00"}), "meta[1].t"),  # a tuple: judged by the slow walk, not passed
    ],
)
def test_unstorable_json_is_refused_with_its_place(value: Any, field: str) -> None:
    with pytest.raises(UnstorableValue) as raised:
        check_json(value, "meta")
    assert raised.value.field is not None
    assert raised.value.field.startswith(field)


def test_storable_json_passes() -> None:
    check_json(
        {"a": [1, 2.5, True, None, "ünïcødé 🎉", {"b": []}], "depth": nested(MAX_JSON_DEPTH - 1)},
        "meta",
    )


def test_storable_values_beyond_parsed_json_pass() -> None:
    """Tuples, other mappings and int subclasses are left by the fast walk to the judge,
    which passes them: the fast walk only ever speeds a verdict up."""
    from enum import IntEnum
    from types import MappingProxyType

    class Level(IntEnum):
        HIGH = 3

    check_json({"t": (1, "a"), "m": MappingProxyType({"k": [Level.HIGH]})}, "meta")


def test_the_error_names_the_field_and_the_reason() -> None:
    with pytest.raises(UnstorableValue, match="endpoint contains a NUL character") as raised:
        check_text("http://x/\x00", "endpoint")
    assert raised.value.as_dict() == {
        "code": "UNSTORABLE_VALUE",
        "message": "endpoint contains a NUL character, which PostgreSQL cannot store",
        "field": "endpoint",
    }
