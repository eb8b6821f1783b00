"""A Sighting cannot be built from values the seed schema's columns cannot hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ronin.errors import InvalidValue
from ronin.store.models import ServiceFilter, Sighting


def build(**overrides: Any) -> Sighting:
    values: dict[str, Any] = {
        "service_id": "did:kos:service:1",
        "node_id": "did:kos:node:1",
        "node_class": "Griot",
        "endpoint": "http://10.0.0.1:30437/",
        "capabilities": ("a",),
        "seen_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return Sighting(**(values | overrides))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_id", "x" * 256),
        ("service_id", ""),
        ("node_id", "n" * 256),
        ("node_class", "C" * 101),
        ("endpoint", ""),
        ("capabilities", ("ok", "c" * 129)),
        ("capabilities", tuple(f"c{i}" for i in range(129))),
        ("capabilities", ("",)),
        ("seen_at", datetime(2026, 1, 1)),
    ],
)
def test_values_beyond_the_columns_are_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidValue) as raised:
        build(**{field: value})
    assert raised.value.field is not None
    assert raised.value.field.startswith(field)


def test_values_at_the_limits_are_accepted() -> None:
    sighting = build(service_id="s" * 255, node_class="C" * 100, capabilities=("c" * 128,))
    assert len(sighting.service_id) == 255


def test_a_filter_refuses_a_naive_time_and_oversized_values() -> None:
    with pytest.raises(InvalidValue, match="timezone"):
        ServiceFilter(seen_since=datetime(2026, 1, 1))
    with pytest.raises(InvalidValue):
        ServiceFilter(all_capabilities=("c" * 129,))
    with pytest.raises(InvalidValue):
        ServiceFilter(node_id="\x00")
