"""The named queries of ``ronin/store/sql/*.sql``, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted((resources.files("ronin.store") / "sql").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _HEADER.split(entry.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"query {name} is defined twice (again in {entry.name})")
            queries[name] = body.strip()
    return queries


def query(name: str) -> sql.SQL:
    """The query named ``name``, ready to execute."""
    return sql.SQL(_all_queries()[name])


def names() -> list[str]:
    """Every query name, for tests that check each one parses."""
    return list(_all_queries())
