"""Opaque keyset cursors: a page's last ``service_id``, so the next page starts after it."""

from __future__ import annotations

import base64
import binascii

from ronin.errors import InvalidCursor
from ronin.store.models import MAX_ID_CHARS

_PREFIX = "s1:"


def encode_cursor(last_service_id: str) -> str:
    """The cursor of the page that follows ``last_service_id``."""
    raw = (_PREFIX + last_service_id).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The ``service_id`` a cursor points after; ``InvalidCursor`` if Ronin did not issue it."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCursor("cursor is not one Ronin issued", field="cursor") from None
    after = text.removeprefix(_PREFIX)
    if not text.startswith(_PREFIX) or not 1 <= len(after) <= MAX_ID_CHARS or "\x00" in after:
        raise InvalidCursor("cursor is not one Ronin issued", field="cursor")
    return after
