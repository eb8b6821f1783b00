"""One reader of the change feed per process, however many streams follow it.

The hub LISTENs (one connection) on ``ronin_changes_pending`` (a commit wrote changes: it runs
a sequencing pass, migration 0005) and ``ronin_changes`` (a pass numbered some), reads each
new change once, and keeps the newest ones in a ring shared by every stream: a stream that
is up to date is served from memory, one that starts further back (a reconnect with
``Last-Event-ID``) pages through the table until it reaches the ring. A notification only
wakes the hub, which reads the table after the cursor it holds, and it reads anyway every
``poll_s``: a notification lost while the listener reconnects costs at most that delay,
never a change.

Memory does not grow with the streams: the ring is the only buffer. A stream whose client
takes its events so slowly that the ring moves past it is ended (``StreamTooSlow``); its
client reconnects with the last cursor it got and catches up from the table.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from ronin.errors import CursorExpired, DatabaseError, StreamTooSlow
from ronin.store.changes import (
    CHANNEL,
    EVERY_CHANGE,
    MAX_PAGE,
    PENDING,
    Change,
    ChangeFeed,
    ChangeFilter,
    format_cursor,
)
from ronin.store.database import raise_if_cancelled
from ronin.store.listen import Listener, Notification

logger = logging.getLogger(__name__)

RING_SIZE = 5000
#: ... and at most this many bytes of encoded changes (services can be large).
RING_BYTES = 16 * 1024 * 1024
POLL_S = 1.0
#: Under a stream of commits, the hub reads at most once per this (an idle hub at once).
COALESCE_S = 0.01
HEARTBEAT_S = 15.0
#: The most changes one batch of a stream carries.
STREAM_BATCH = 500


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new for a while; ``cursor`` is where the stream stands (resume from it)."""

    cursor: str


class ChangeHub:
    """The process's one reader of the feed, fanned out to every stream."""

    def __init__(
        self,
        feed: ChangeFeed,
        conninfo: str,
        *,
        ring_size: int = RING_SIZE,
        poll_s: float = POLL_S,
        coalesce_s: float = COALESCE_S,
        wakeups: Callable[[], AsyncIterator[Notification]] | None = None,
    ) -> None:
        self._feed = feed
        self._ring_size = ring_size
        self._poll_s = poll_s
        self._coalesce_s = coalesce_s
        self._wakeups = wakeups or (lambda: aiter(Listener(conninfo, [PENDING, CHANNEL])))
        self._ring: list[Change] = []
        self._seqs: list[int] = []
        self._sizes: list[int] = []
        self._ring_bytes = 0
        #: The ring holds every change after ``_floor`` up to ``_last``; None before the hub
        #: has read the head.
        self._floor: int | None = None
        self._last: int | None = None
        self._advanced = asyncio.Event()
        self._wake = asyncio.Event()
        #: A commit wrote changes that no pass may have numbered yet.
        self._pending = True
        self._task: asyncio.Task[None] | None = None
        self._streams = 0
        self._ending = False

    async def __aenter__(self) -> ChangeHub:
        """Nothing yet: the hub starts with its first stream, so a node whose feed nobody
        follows holds no LISTEN connection."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        while task is not None and not task.done():
            # Again if need be: a driver may turn a cancellation into an error of its own.
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    def end_streams(self) -> None:
        """End every stream now and any that starts later (the server is shutting down: its
        clients reconnect elsewhere, or to it once it is back, from their last cursor)."""
        self._ending = True
        self._advance()

    @property
    def streams(self) -> int:
        """Streams following the hub now."""
        return self._streams

    @property
    def last(self) -> str | None:
        """The newest cursor the hub has read."""
        return None if self._last is None else format_cursor(self._last)

    async def follow(
        self,
        since: str | None,
        where: ChangeFilter = EVERY_CHANGE,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        batch: int = STREAM_BATCH,
    ) -> AsyncGenerator[list[Change] | Heartbeat, None]:
        """The changes after ``since`` (from now if None) as they commit, in batches in cursor
        order, and a ``Heartbeat`` every ``heartbeat_s``, busy or not.

        ``since`` is checked before anything is yielded (``InvalidCursor``,
        ``CursorExpired``); a stream that falls out of the ring raises ``StreamTooSlow``."""
        self._start()
        position = await self._feed.check(since)
        live = False
        loop = asyncio.get_running_loop()
        beaten = loop.time()
        self._streams += 1
        try:
            while not self._ending:
                if loop.time() - beaten >= heartbeat_s:
                    # Whatever else it sends: a filtered stream may see nothing it wants for
                    # as long as others change, and its client still learns how far it is.
                    beaten = loop.time()
                    yield Heartbeat(format_cursor(position))
                served = self._from_ring(position, where, batch)
                if served is None:
                    if live:
                        raise StreamTooSlow(
                            f"the stream fell behind the newest {self._ring_size} changes; "
                            f"resume from cursor {format_cursor(position)}"
                        )
                    page = await self._feed.page(
                        format_cursor(position), where, limit=min(batch, MAX_PAGE)
                    )
                    changes, reached = page.changes, int(page.cursor)
                else:
                    changes, reached = served
                    live = True
                if changes:
                    yield changes
                if reached > position:
                    position = reached
                    continue
                await self._wait_beyond(position, beaten + heartbeat_s - loop.time())
        finally:
            self._streams -= 1

    def _from_ring(
        self, position: int, where: ChangeFilter, batch: int
    ) -> tuple[list[Change], int] | None:
        """The ring's changes after ``position``, and how far they reach; None if the ring
        does not go back that far."""
        if self._floor is None or self._last is None or position < self._floor:
            return None
        start = bisect.bisect_right(self._seqs, position)
        if where.everything:
            changes = self._ring[start : start + batch]
            if len(changes) == batch:
                return changes, changes[-1].seq
            return changes, max(self._last, position)
        found: list[Change] = []
        for change in self._ring[start:]:
            if where.matches(change):
                found.append(change)
                if len(found) == batch:
                    return found, change.seq
        return found, max(self._last, position)

    async def _wait_beyond(self, position: int, timeout_s: float) -> bool:
        """Wait until the hub has read past ``position``; False after ``timeout_s`` or once
        the streams are ending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self._last is None or self._last <= position) and not self._ending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            advanced = self._advanced
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await advanced.wait()
        return not self._ending

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="change feed hub")

    async def _run(self) -> None:
        """Read new changes whenever woken, and every ``poll_s`` anyway, for ever."""
        listener = asyncio.create_task(self._listen(), name="change feed listener")
        try:
            while True:
                try:
                    await self._read_new()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the hub outlives any one failed read
                    raise_if_cancelled()
                    level = logging.DEBUG if isinstance(exc, DatabaseError) else logging.WARNING
                    logger.log(level, "change feed hub: read failed: %s", exc)
                if self._wake.is_set():
                    # Commits came while it read: let a few more arrive, so that every
                    # stream wakes once for them all rather than once for each.
                    await asyncio.sleep(self._coalesce_s)
                with contextlib.suppress(TimeoutError):
                    # Not wait_for: on Python 3.11 it loses a cancellation that arrives as
                    # the event is set, and the hub would outlive its ``async with``.
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self) -> None:
        async for note in self._wakeups():
            if note.channel != CHANNEL:  # a commit, or a reconnection after which anything
                self._pending = True  # may have come
            self._wake.set()

    async def _read_new(self) -> None:
        """A sequencing pass if a commit asked for one (waiting for a running pass: it may
        have started before that commit), then everything numbered since the hub's last read,
        into the ring. Without a wake-up (the poll), a pass only if none is running."""
        pending, self._pending = self._pending, False
        await self._feed.sequence(wait=pending)
        if self._last is None:
            head = await self._feed.check(None)
            self._floor = self._last = head
            self._advance()
        while True:
            try:
                page = await self._feed.page(
                    format_cursor(self._last), limit=MAX_PAGE, sequence=False
                )
            except CursorExpired as exc:
                # The log was rebuilt or pruned past the hub: start over from its head. Every
                # stream behind it now pages from the table, which tells its client.
                logger.warning("change feed hub: %s", exc.message)
                self._ring.clear()
                self._seqs.clear()
                self._sizes.clear()
                self._ring_bytes = 0
                self._floor = self._last = int(exc.cursor)
                self._advance()
                return
            self._ring.extend(page.changes)
            self._seqs.extend(change.seq for change in page.changes)
            sizes = [len(change.json_bytes()) for change in page.changes]
            self._sizes.extend(sizes)
            self._ring_bytes += sum(sizes)
            reached = int(page.cursor)
            if reached > self._last:
                self._last = reached
                self._trim()
                self._advance()
            if not page.more:
                return

    def _trim(self) -> None:
        """Past twice ``ring_size`` changes or twice ``RING_BYTES``, drop the older half at
        once (one slice, not a shift per change)."""
        if len(self._ring) <= 2 * self._ring_size and self._ring_bytes <= 2 * RING_BYTES:
            return
        keep, kept_bytes = 0, 0
        for size in reversed(self._sizes):
            if keep == self._ring_size or kept_bytes + size > RING_BYTES:
                break
            keep += 1
            kept_bytes += size
        drop = len(self._ring) - max(keep, 1)
        if drop <= 0:
            return
        self._floor = self._seqs[drop - 1]
        del self._ring[:drop]
        del self._seqs[:drop]
        del self._sizes[:drop]
        self._ring_bytes = sum(self._sizes)

    def _advance(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()
