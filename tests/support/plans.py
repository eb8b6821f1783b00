"""Reading query plans in tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from ronin.store.queries import query


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(db_url: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of the plan PostgreSQL picks for named query ``name`` with ``params``."""
    with psycopg.connect(db_url) as conn:
        statement = sql.SQL("EXPLAIN (FORMAT JSON) ") + query(name)
        [[document]] = conn.execute(statement, params, prepare=False).fetchall()
    root = (document if isinstance(document, list) else json.loads(document))[0]["Plan"]
    return list(plan_nodes(root))
