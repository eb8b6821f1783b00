"""Numbered plain-SQL migrations: apply them once, under a lock, and check them at start-up."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from ronin.errors import SchemaOutOfDate

# pg_advisory_xact_lock key: the bytes of "Ronin", so two processes migrating at once queue up.
MIGRATION_LOCK_KEY = int.from_bytes(b"Ronin", "big")
FIX_COMMAND = "ronin db migrate"


@dataclass(frozen=True, slots=True)
class Migration:
    """One file of ``ronin/store/migrations``: ``NNNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Which migrations a database has, next to the ones this Ronin ships."""

    applied: tuple[int, ...]
    known: tuple[int, ...]

    @property
    def pending(self) -> tuple[int, ...]:
        return tuple(v for v in self.known if v not in self.applied)

    @property
    def unknown(self) -> tuple[int, ...]:
        """Migrations applied by a newer Ronin than this one."""
        return tuple(v for v in self.applied if v not in self.known)

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    folder = resources.files("ronin.store") / "migrations"
    migrations = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            migrations.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    migrations.sort(key=lambda m: m.version)
    return migrations


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS ronin_schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_SEED_TABLES_EXIST = """
SELECT count(*) = 2 FROM pg_tables
WHERE schemaname = current_schema()
  AND tablename IN ('discovery_jobs', 'discovered_services')
"""


async def applied_versions(conn: psycopg.AsyncConnection[Any]) -> tuple[int, ...]:
    """Versions recorded in the ledger; none when the ledger does not exist yet."""
    cur = await conn.execute("SELECT to_regclass('ronin_schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return ()
    cur = await conn.execute("SELECT version FROM ronin_schema_migrations ORDER BY version")
    return tuple(int(r[0]) for r in await cur.fetchall())


async def schema_status(conn: psycopg.AsyncConnection[Any]) -> SchemaStatus:
    """Compare the database's ledger with the shipped migrations."""
    known = tuple(m.version for m in load_migrations())
    return SchemaStatus(applied=await applied_versions(conn), known=known)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply every pending migration in one transaction; return the ones applied.

    Idempotent, and safe when several processes start at once: the advisory lock makes the
    second wait for the first, then find nothing left to do. A database that already holds the
    seed tables (created from the founding document by hand) adopts them as migration 1.
    """
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(_CREATE_LEDGER)
        done = set(await applied_versions(conn))
        for migration in load_migrations():
            if migration.version in done:
                continue
            if migration.version == 1 and await _seed_tables_exist(conn):
                await _record(conn, migration)
                continue
            await conn.execute(migration.sql.encode())
            await _record(conn, migration)
            applied.append(migration)
    return applied


async def ensure_current(conn: psycopg.AsyncConnection[Any]) -> None:
    """Refuse to go on with a schema this Ronin was not built for, naming the fix."""
    status = await schema_status(conn)
    if status.unknown:
        raise SchemaOutOfDate(
            f"The database has migration(s) {_list(status.unknown)} that this Ronin does not "
            "know: it was migrated by a newer Ronin. Upgrade Ronin."
        )
    if status.pending:
        raise SchemaOutOfDate(
            f"The database schema is out of date (missing migration(s) {_list(status.pending)}). "
            f"Run `{FIX_COMMAND}`."
        )


async def _seed_tables_exist(conn: psycopg.AsyncConnection[Any]) -> bool:
    row = await (await conn.execute(_SEED_TABLES_EXIST)).fetchone()
    return bool(row and row[0])


async def _record(conn: psycopg.AsyncConnection[Any], migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO ronin_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        (migration.version, migration.name, migration.checksum),
    )


def _list(versions: tuple[int, ...]) -> str:
    return ", ".join(f"{v:04d}" for v in versions)
