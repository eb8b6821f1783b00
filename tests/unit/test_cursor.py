"""Cursors round-trip any service_id and refuse anything Ronin did not issue."""

from __future__ import annotations

import pytest

from ronin.errors import InvalidCursor
from ronin.store.cursor import decode_cursor, encode_cursor


@pytest.mark.parametrize(
    "service_id", ["did:kos:service:1", "did:web:example.org%3A8443:a:b", "ü" * 255]
)
def test_a_cursor_round_trips(service_id: str) -> None:
    cursor = encode_cursor(service_id)
    assert cursor.isascii()
    assert "=" not in cursor
    assert decode_cursor(cursor) == service_id


@pytest.mark.parametrize("cursor", ["", "%%%", "ab", encode_cursor("x")[:-1] + "*", "ü"])
def test_garbage_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as raised:
        decode_cursor(cursor)
    assert raised.value.field == "cursor"
