"""Migrations: applied once, recorded, safe to race, and checked before any other work."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from ronin.config import Settings
from ronin.errors import SchemaOutOfDate
from ronin.store.database import open_database
from ronin.store.migrate import load_migrations, migrate, schema_status


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def ledger(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM ronin_schema_migrations ORDER BY 1")
        return rows.fetchall()


async def test_migrating_twice_applies_nothing_the_second_time(fresh_database: str) -> None:
    async with await connect(fresh_database) as conn:
        first = await migrate(conn)
        second = await migrate(conn)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert second == []
    assert ledger(fresh_database) == [(m.version, m.name) for m in load_migrations()]


async def test_processes_migrating_at_once_apply_each_migration_once(
    fresh_database: str,
) -> None:
    connections = [await connect(fresh_database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in load_migrations()]
    assert len(ledger(fresh_database)) == len(load_migrations())


async def test_other_work_refuses_an_out_of_date_schema_and_names_the_fix(
    fresh_database: str,
) -> None:
    settings = Settings(database_url=fresh_database)
    with pytest.raises(SchemaOutOfDate, match="ronin db migrate"):
        await open_database(settings)
    async with (
        await open_database(settings, migrate=True) as database,
        database.pool.connection() as conn,
    ):
        status = await schema_status(conn)
    assert status.current


async def test_a_schema_from_a_newer_ronin_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ronin_schema_migrations (version, name, checksum) "
            "VALUES (9999, 'from_the_future', '')"
        )
    with pytest.raises(SchemaOutOfDate, match="newer Ronin"):
        await open_database(Settings(database_url=db_url))


async def test_seed_tables_made_by_hand_are_adopted(
    fresh_database: str, seed_schema_sql: str
) -> None:
    seed = seed_schema_sql.replace('CREATE EXTENSION IF NOT EXISTS "uuid-ossp";', "").replace(
        "uuid_generate_v4()", "gen_random_uuid()"
    )
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(seed.encode())
        conn.execute(
            "INSERT INTO discovered_services (service_id, node_id, node_class, endpoint, "
            """capabilities, last_seen) VALUES ('did:kos:s:1', 'did:kos:n:1', 'Griot', 'http://x/',
            '["kept"]', now())"""
        )
    async with await connect(fresh_database) as conn:
        applied = await migrate(conn)
    assert [m.version for m in applied] == [m.version for m in load_migrations()][1:]
    with psycopg.connect(fresh_database) as conn:
        # Rows written before Ronin arrived are in the capability index too.
        assert conn.execute("SELECT capability FROM service_capabilities").fetchall() == [("kept",)]
