"""The store's listener outlives its connection: a backend killed under it is replaced, the
channels are listened to again, and a later NOTIFY still arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg

from ronin.store.listen import Listener, Notification

CHANNEL = "ronin_test_listen"
STEP_TIMEOUT_S = 30.0


async def next_note(notes: AsyncIterator[Notification]) -> Notification:
    """The listener's next notification, bounded so a hung listener fails the test."""
    return await asyncio.wait_for(anext(notes), timeout=STEP_TIMEOUT_S)


async def notify(db_url: str, payload: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


async def kill_listeners(db_url: str) -> int:
    """Terminate every backend listening on ``CHANNEL``'s database but this one."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE 'LISTEN%%'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_listener_delivers_a_notify(db_url: str) -> None:
    notes = aiter(Listener(db_url, [CHANNEL]))
    assert (await next_note(notes)).reconnected
    await notify(db_url, "one")
    note = await next_note(notes)
    assert (note.channel, note.payload, note.reconnected) == (CHANNEL, "one", False)
    await notes.aclose()  # type: ignore[attr-defined]


async def test_listener_survives_a_terminated_backend(db_url: str) -> None:
    notes = aiter(Listener(db_url, [CHANNEL], first_delay_s=0.01, max_delay_s=0.1))
    assert (await next_note(notes)).reconnected
    assert await kill_listeners(db_url) == 1
    assert (await next_note(notes)).reconnected  # listening again on a new connection
    await notify(db_url, "after")
    note = await next_note(notes)
    assert (note.channel, note.payload) == (CHANNEL, "after")
    await notes.aclose()  # type: ignore[attr-defined]
