"""Open the database Ronin works on: the operator's server or the embedded one, as a pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from ronin.config import Settings
from ronin.errors import DatabaseError, DatabaseUnreachable
from ronin.store import migrate as migrations
from ronin.store.embedded import start_embedded

logger = logging.getLogger(__name__)

APPLICATION_NAME = "ronin"
ABANDONED_CONNECT_S = 10.0


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a driver turned into an error of its own.

    psycopg answers a cancelled query with an error (the server cancelled it), so a loop that
    outlives failed statements would swallow its task's cancellation and run for ever; such a
    loop calls this in its ``except``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@asynccontextmanager
async def pooled_connection(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pool connection; driver errors leave here as ``DatabaseError``: one boundary."""
    try:
        async with pool.connection() as conn:
            if not conn.autocommit:
                # A read is one round trip, not BEGIN, SELECT and ROLLBACK; writes that need a
                # transaction open one explicitly.
                await conn.set_autocommit(True)
            yield conn
    except psycopg.Error as exc:
        raise DatabaseError(f"Database error: {exc}".strip()) from exc


def resolve_conninfo(settings: Settings) -> str:
    """The connection string to use: ``RONIN_DATABASE_URL``, or the embedded server's."""
    url = settings.database_url or start_embedded(settings.data_dir)
    return make_conninfo(
        url,
        application_name=APPLICATION_NAME,
        connect_timeout=max(1, round(settings.connect_timeout_s)),
    )


@dataclass(slots=True)
class Database:
    """A pool on a migrated database; ``async with`` closes it."""

    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    conninfo: str

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.pool.close()


async def open_database(
    settings: Settings, *, migrate: bool | None = None, for_worker: bool = False
) -> Database:
    """Connect, bring or check the schema, and return a ready pool.

    ``migrate`` decides whether the schema may be changed; by default only the embedded
    database migrates itself. Anywhere else an out-of-date schema raises ``SchemaOutOfDate``
    naming ``ronin db migrate``.

    ``for_worker``: the pool commits without waiting for the WAL flush. A worker's writes
    (claims, heartbeats, progress, sightings, finishes) are all repeatable: if a server crash
    loses the last fraction of a second of them, a job finished in that window goes back to
    its lease, lapses and runs again, and since WAL is written in order, a job's finish is never
    durable before the sightings it wrote. Submissions never go through such a pool.
    """
    conninfo = resolve_conninfo(settings)
    if migrate is None:
        migrate = settings.embedded
    await prepare_schema(conninfo, migrate=migrate)
    return await open_pool(conninfo, settings, for_worker=for_worker)


async def open_pool(conninfo: str, settings: Settings, *, for_worker: bool = False) -> Database:
    """A ready pool on ``conninfo``, whose schema the caller has already checked."""
    statement_timeout_ms = round(settings.statement_timeout_s * 1000)

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET statement_timeout = {statement_timeout_ms}")
        if for_worker:
            await conn.execute("SET synchronous_commit = off")
        await conn.commit()

    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=settings.pool_max_size,
        open=False,
        configure=configure,
        # No check on checkout: it would cost a round trip per statement. A connection a
        # server restart broke fails once, is discarded by the pool, and the caller retries.
        timeout=settings.connect_timeout_s * 3,
        name="ronin",
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout_s * 3)
    except Exception as exc:
        await pool.close()
        raise DatabaseError(f"Could not open a connection pool: {one_line(exc)}") from exc
    return Database(pool=pool, conninfo=conninfo)


async def prepare_schema(conninfo: str, *, migrate: bool) -> None:
    """Migrate the schema, or check that it is current."""
    async with await connect(conninfo) as conn:
        if migrate:
            applied = await migrations.migrate(conn)
            for migration in applied:
                logger.info("applied migration %04d_%s", migration.version, migration.name)
        else:
            await migrations.ensure_current(conn)


async def connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection, with connection failures turned into ``DatabaseError``.

    Cancelled mid-handshake, it finishes the handshake and closes the connection: abandoned,
    the server would keep a backend waiting for the password until its
    ``authentication_timeout`` (a minute), and that backend holds up ``DROP DATABASE``.
    """
    connecting = asyncio.ensure_future(_open(conninfo))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await asyncio.wait_for(connecting, timeout=ABANDONED_CONNECT_S)).close()
        raise


async def _open(conninfo: str) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(server_address(conninfo), one_line(exc)) from exc


def server_address(conninfo: str) -> str:
    """Where ``conninfo`` points, for a message: ``host:port`` or a socket directory; never
    the password."""
    options = conninfo_to_dict(conninfo)
    host = str(options.get("host") or options.get("hostaddr") or "localhost")
    port = str(options.get("port") or "5432")
    if host.startswith("/"):
        return f"the socket in {host}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def one_line(exc: BaseException) -> str:
    """A driver message on one line: libpq adds hints and per-host reports on lines of
    their own."""
    return " ".join(str(exc).split())
