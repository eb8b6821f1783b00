"""LISTEN on a few channels for as long as it takes: the one listener of the worker and of
``follow``.

A notification is a hint, never the truth: whoever listens also polls. So the listener never
fails its caller; when the server goes it reconnects, with exponential backoff up to a bound,
LISTENs again and says so (``Notification.reconnected``), since anything may have changed
while it was away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ronin.errors import DatabaseError
from ronin.store.database import connect, raise_if_cancelled

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


@dataclass(frozen=True, slots=True)
class Notification:
    """One NOTIFY, or (``reconnected``) a fresh LISTEN after which anything may have changed."""

    channel: str
    payload: str
    reconnected: bool = False


class Listener:
    """An endless async iterator of the notifications on ``channels``."""

    def __init__(
        self,
        conninfo: str,
        channels: Sequence[str],
        *,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self._conninfo = conninfo
        self._channels = tuple(channels)
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._notifications()

    async def _notifications(self) -> AsyncIterator[Notification]:
        """Listen, yield, and on any loss of the connection wait and listen again."""
        delay = self._first_delay_s
        while True:
            try:
                async with await connect(self._conninfo) as conn:
                    await self._listen(conn)
                    delay = self._first_delay_s
                    yield Notification("", "", reconnected=True)
                    async for note in conn.notifies():
                        yield Notification(note.channel, note.payload)
            except (psycopg.Error, DatabaseError) as exc:
                raise_if_cancelled()
                logger.debug("listener on %s lost its connection: %s", self._channels, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay_s)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for channel in self._channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
