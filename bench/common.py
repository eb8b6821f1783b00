"""What every benchmark needs of the database: autocommit connections, scratch databases."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ronin.store.migrate import migrate

Connection = psycopg.AsyncConnection[Any]


async def connect(url: str) -> Connection:
    """An autocommit connection."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


@asynccontextmanager
async def scratch_database(server: str, name_prefix: str) -> AsyncIterator[str]:
    """A fresh migrated database; dropped on the way out, whatever happened."""
    name = f"{name_prefix}_{secrets.token_hex(4)}"
    async with await connect(server) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server, dbname=name)
    try:
        async with await connect(url) as conn:
            await migrate(conn)
        yield url
    finally:
        async with await connect(server) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            await conn.execute(drop.format(sql.Identifier(name)))
