"""Every test that touches SQL gets its own database on a real PostgreSQL server.

The server is ``RONIN_TEST_DATABASE_URL`` when set (any PostgreSQL 13+ where the role may
create databases), otherwise an embedded server started for this test session. A template
database is migrated once; each test clones it (``CREATE DATABASE ... TEMPLATE``), which costs
milliseconds, and drops it ``WITH (FORCE)`` afterwards.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from ronin.store.embedded import start_embedded
from ronin.store.migrate import migrate
from ronin.store.services import ServiceMap

# Read before the autouse fixture below clears RONIN_* from every test's environment.
EXTERNAL_SERVER_URL = os.environ.get("RONIN_TEST_DATABASE_URL")
FRESHNESS_WINDOW = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's RONIN_* or PG* settings."""
    for name in list(os.environ):
        if name.startswith(("RONIN_", "PG")):
            monkeypatch.delenv(name)


def server_directory(prefix: str) -> Path:
    """A directory for an embedded server, outside pytest's private temporary tree.

    The server runs as another user (``embedded_postgres``, when the tests run as root), and
    pytest makes its tree private again whenever a pytest session starts: a server in there
    would lose access to its own files. The directory is removed at exit, after the server
    has stopped (``atexit`` runs handlers last-registered first).
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@pytest.fixture
def data_dir() -> Path:
    """A RONIN_DATA_DIR for ronin processes started by one test."""
    return server_directory("ronin-test-data-")


@pytest.fixture(scope="session")
def server_url() -> str:
    """A connection URL for the test server's maintenance database."""
    if EXTERNAL_SERVER_URL:
        return EXTERNAL_SERVER_URL
    return start_embedded(server_directory("ronin-test-server-"))


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on the same server."""
    return make_conninfo(server, dbname=name)


def create_database(server: str, name: str, template: str | None = None) -> str:
    """Create an empty (or cloned) database and return its URL."""
    with psycopg.connect(server, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return database_url(server, name)


def drop_database(server: str, name: str, attempts: int = 5) -> None:
    """Drop a test database; a few tries, since a backend the role may not end (autovacuum,
    on PostgreSQL 15 without pg_signal_backend) can hold it for a moment."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for attempt in range(attempts):
        try:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(statement)
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """The name of a migrated database every test database is cloned from."""
    name = f"ronin_template_{uuid.uuid4().hex[:8]}"
    url = create_database(server_url, name)

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)

    asyncio.run(apply())
    yield name
    drop_database(server_url, name)


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty (unmigrated) database."""
    name = f"ronin_empty_{uuid.uuid4().hex[:12]}"
    yield create_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def db_url(server_url: str, template_database: str) -> Iterator[str]:
    """The URL of this test's own migrated database."""
    name = f"ronin_test_{uuid.uuid4().hex[:12]}"
    yield create_database(server_url, name, template=template_database)
    drop_database(server_url, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A small connection pool on this test's database."""
    async with AsyncConnectionPool(db_url, min_size=1, max_size=8, open=False) as opened:
        await opened.wait(timeout=30)
        yield opened


@pytest.fixture
def service_map(pool: AsyncConnectionPool[Any]) -> ServiceMap:
    """The map on this test's database, with a one-hour freshness window."""
    return ServiceMap(pool, freshness_window=FRESHNESS_WINDOW)


@pytest.fixture(scope="session")
def seed_schema_sql() -> str:
    """The founding document's schema, as vendored in tests/fixtures."""
    return (Path(__file__).parent / "fixtures" / "seed_schema.sql").read_text()
