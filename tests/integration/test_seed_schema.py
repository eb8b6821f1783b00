"""Migration 0001 produces exactly the founding document's schema (PROTOCOL of the store)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

SEED_TABLES = ("discovery_jobs", "discovered_services")
SHARED_SEED = Path(__file__).parents[3] / "shared" / "SEED_SCHEMA.sql"

COLUMNS = """
SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length,
       is_nullable, column_default
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY (%s)
ORDER BY table_name, ordinal_position
"""

INDEXES = """
SELECT tablename, indexname, indexdef FROM pg_indexes
WHERE schemaname = current_schema() AND tablename = ANY (%s)
ORDER BY indexname
"""

CONSTRAINTS = """
SELECT tc.table_name, tc.constraint_type, kcu.column_name
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
WHERE tc.table_schema = current_schema() AND tc.table_name = ANY (%s)
ORDER BY 1, 2, 3
"""


def has_uuid_ossp(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'uuid-ossp'"
        ).fetchone()
    return bool(row and row[0])


def seed_as_this_server_can_run_it(seed_sql: str, url: str) -> str:
    """The seed verbatim, or, without uuid-ossp, with its built-in v4 equivalent."""
    if has_uuid_ossp(url):
        return seed_sql
    return seed_sql.replace('CREATE EXTENSION IF NOT EXISTS "uuid-ossp";', "").replace(
        "uuid_generate_v4()", "gen_random_uuid()"
    )


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            "columns": conn.execute(COLUMNS, (list(SEED_TABLES),)).fetchall(),
            "indexes": conn.execute(INDEXES, (list(SEED_TABLES),)).fetchall(),
            "constraints": conn.execute(CONSTRAINTS, (list(SEED_TABLES),)).fetchall(),
        }


@pytest.fixture
def seed_database(fresh_database: str, seed_schema_sql: str) -> str:
    """A database built by running the founding document's SQL by hand."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(seed_as_this_server_can_run_it(seed_schema_sql, fresh_database).encode())
    return fresh_database


def test_columns_and_constraints_equal_the_seed(db_url: str, seed_database: str) -> None:
    ours, seed = catalog(db_url), catalog(seed_database)
    assert ours["columns"] == seed["columns"]
    assert ours["constraints"] == seed["constraints"]
    assert len(ours["columns"]) == 12


def test_every_seed_index_exists_with_the_same_definition(db_url: str, seed_database: str) -> None:
    ours = {name: (table, definition) for table, name, definition in catalog(db_url)["indexes"]}
    seed = catalog(seed_database)["indexes"]
    assert {name for _, name, _ in seed} == {
        "discovery_jobs_pkey",
        "idx_discovery_jobs_status",
        "discovered_services_pkey",
        "idx_discovered_services_capabilities",
        "idx_discovered_services_node_class",
    }
    for table, name, definition in seed:
        assert ours[name] == (table, definition)
    assert "USING gin (capabilities)" in ours["idx_discovered_services_capabilities"][1]


def test_job_id_defaults_to_a_random_v4_uuid(db_url: str) -> None:
    expected_default = "uuid_generate_v4()" if has_uuid_ossp(db_url) else "gen_random_uuid()"
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'discovery_jobs' AND column_name = 'job_id'"
        ).fetchone()
        assert row == (expected_default,)
        ids = [
            conn.execute(
                "INSERT INTO discovery_jobs (status, params) VALUES ('pending', '{}') "
                "RETURNING job_id"
            ).fetchone()[0]  # type: ignore[index]
            for _ in range(3)
        ]
    assert all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert len(set(ids)) == 3


@pytest.mark.skipif(not SHARED_SEED.exists(), reason="shared/ is not beside this checkout")
def test_vendored_seed_is_the_founding_documents(seed_schema_sql: str) -> None:
    assert SHARED_SEED.read_text() == seed_schema_sql
