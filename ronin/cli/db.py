"""``ronin db``: migrations and schema status."""

from __future__ import annotations

from ronin.cli.common import console, db_app, run
from ronin.config import Settings
from ronin.store.database import connect, resolve_conninfo
from ronin.store.migrate import FIX_COMMAND, load_migrations, migrate, schema_status


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to run from several machines at once)."""

    async def work(settings: Settings) -> list[str]:
        async with await connect(resolve_conninfo(settings)) as conn:
            return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]

    applied = run(work)
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    else:
        console.print("schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """Show which migrations the database has and which it lacks."""

    async def work(settings: Settings) -> tuple[tuple[int, ...], tuple[int, ...]]:
        async with await connect(resolve_conninfo(settings)) as conn:
            status = await schema_status(conn)
        return status.applied, status.pending

    applied, pending = run(work)
    for migration in load_migrations():
        state = "applied" if migration.version in applied else "pending"
        console.print(f"{migration.version:04d}_{migration.name}: {state}")
    if pending:
        console.print(f"run `{FIX_COMMAND}` to apply the pending migrations")
