"""The named queries of ``queries.sql``, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all_queries() -> dict[str, str]:
    text = (resources.files("ronin.store") / "queries.sql").read_text()
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> sql.SQL:
    """The query named ``name`` in ``queries.sql``, ready to execute."""
    return sql.SQL(_all_queries()[name])


def names() -> list[str]:
    """Every query name, for tests that check each one parses."""
    return list(_all_queries())
