"""The change feed (PROTOCOL.md section 9): every change to the map, in commit order.

Migration 0005 writes the log (triggers, in the transaction that changes the map) and gives
committed changes their cursors in sequencing passes; this module runs passes, reads the log
a page at a time and prunes it.
A cursor is the change's sequence number as 16 zero-padded digits, so cursors also sort as
strings; clients treat them as opaque.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson

from ronin.errors import CursorExpired, InvalidCursor, InvalidValue
from ronin.store.database import pooled_connection
from ronin.store.liveness_rules import State
from ronin.store.models import MAX_NODE_CLASS_CHARS, Service, canonical_class
from ronin.store.queries import query
from ronin.store.services import Pool

if TYPE_CHECKING:
    from pydantic import TypeAdapter

#: NOTIFY channel of every sequencing pass that numbered changes; the payload (the newest
#: cursor) is a hint.
CHANNEL = "ronin_changes"
#: NOTIFY channel of every commit that wrote changes not numbered yet.
PENDING = "ronin_changes_pending"
ChangeType = Literal["service_added", "service_changed", "service_state", "service_removed"]
CHANGE_TYPES: tuple[ChangeType, ...] = (
    "service_added",
    "service_changed",
    "service_state",
    "service_removed",
)
CURSOR_DIGITS = 16
MAX_PAGE = 1000
#: How many cursors one page reads past its ``since`` at most, whatever its filter.
SCAN_WINDOW = 10_000
PRUNE_BATCH = 5000


def format_cursor(seq: int) -> str:
    """The cursor of sequence number ``seq``."""
    return f"{seq:0{CURSOR_DIGITS}d}"


def parse_cursor(text: str, field: str = "since") -> int:
    """The sequence number of a cursor Ronin issued; ``InvalidCursor`` for anything else."""
    if len(text) != CURSOR_DIGITS or not text.isascii() or not text.isdigit():
        raise InvalidCursor("cursor is not one Ronin issued", field=field)
    return int(text)


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which changes a reader wants: of services holding every capability, of a class, of a
    node (as ``/v1/services`` filters)."""

    capabilities: tuple[str, ...] = ()
    node_class: str | None = None
    node_id: str | None = None

    def __post_init__(self) -> None:
        if self.node_class is not None:
            if len(self.node_class) > MAX_NODE_CLASS_CHARS:
                raise InvalidValue("node_class is too long", field="node_class")
            object.__setattr__(self, "node_class", canonical_class(self.node_class))
        object.__setattr__(self, "capabilities", tuple(dict.fromkeys(self.capabilities)))

    @property
    def everything(self) -> bool:
        return not self.capabilities and self.node_class is None and self.node_id is None

    def matches(self, change: Change) -> bool:
        """The filter applied to one change in memory, as ``change_page`` applies it in SQL."""
        service = change.service
        if self.node_id is not None and change.node_id != self.node_id:
            return False
        if self.node_class is not None and service.node_class != self.node_class:
            return False
        return all(capability in service.capabilities for capability in self.capabilities)


EVERY_CHANGE = ChangeFilter()


@dataclass(frozen=True, slots=True)
class Change:
    """One record of the feed."""

    cursor: str
    type: ChangeType
    at: datetime
    service_id: str
    node_id: str
    from_state: State | None
    to_state: State | None
    #: The service as ``GET /v1/services`` shows it, at the change.
    service: Service
    _encoded: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @property
    def seq(self) -> int:
        return int(self.cursor)

    def to_json(self) -> dict[str, Any]:
        """The record of PROTOCOL.md section 9; ``from`` and ``to`` only on a state change."""
        record: dict[str, Any] = {
            "cursor": self.cursor,
            "type": self.type,
            "at": _timestamp(self.at),
            "service_id": self.service_id,
            "node_id": self.node_id,
        }
        if self.type == "service_state":
            record["from"] = self.from_state
            record["to"] = self.to_state
        record["service"] = _service_adapter().dump_python(self.service, mode="json")
        return record

    def json_bytes(self) -> bytes:
        """``to_json`` encoded, once: a change sent to 100 streams is encoded for the first."""
        if not self._encoded:
            self._encoded.append(orjson.dumps(self.to_json()))
        return self._encoded[0]


@dataclass(frozen=True, slots=True)
class ChangePage:
    """Changes after a cursor; ``cursor`` is where the next page starts."""

    changes: list[Change]
    cursor: str
    more: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [change.to_json() for change in self.changes],
            "cursor": self.cursor,
            "more": self.more,
        }


class ChangeFeed:
    """Reads and prunes the log of migration 0005."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def current(self) -> str:
        """The newest cursor: a reader starting here gets every change from now on."""
        head, _ = await self._head()
        return format_cursor(head)

    async def page(
        self,
        since: str | None,
        where: ChangeFilter = EVERY_CHANGE,
        *,
        limit: int = 100,
        sequence: bool = True,
    ) -> ChangePage:
        """The changes after ``since`` (none, from now, if ``since`` is None), oldest first;
        first, unless ``sequence`` is false, a sequencing pass if none is running, so a
        page is fresh even where no hub runs.

        ``CursorExpired`` if changes after ``since`` were pruned, or if ``since`` is past the
        head (a cursor of another database, or of this one before it was rebuilt)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidCursor(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        if since is None:
            return ChangePage([], await self.current(), more=False)
        after = parse_cursor(since)
        async with pooled_connection(self._pool) as conn:
            if sequence:
                await conn.execute(query("sequence_changes"), {"wait": False})
            cur = await conn.execute(
                query("change_page"),
                {
                    "since": after,
                    "scan": SCAN_WINDOW,
                    "limit": limit + 1,
                    "node_id": where.node_id,
                    "node_class": where.node_class,
                    "capabilities": (
                        orjson.dumps(list(where.capabilities)).decode()
                        if where.capabilities
                        else None
                    ),
                },
            )
            rows = await cur.fetchall()
        head, pruned_through = int(rows[0][0]), int(rows[0][1])
        _check_since(after, head, pruned_through)
        changes = [_change(row[2:]) for row in rows if row[2] is not None]
        if len(changes) > limit:
            return ChangePage(changes[:limit], changes[limit - 1].cursor, more=True)
        reached = min(head, after + SCAN_WINDOW)
        return ChangePage(changes, format_cursor(reached), more=reached < head)

    async def check(self, since: str | None) -> int:
        """The sequence number a reader of ``since`` starts after (the head for None), or the
        same errors as ``page``: a stream checks its cursor before it starts."""
        head, pruned_through = await self._head()
        if since is None:
            return head
        after = parse_cursor(since)
        _check_since(after, head, pruned_through)
        return after

    async def sequence(self, *, wait: bool = True) -> str | None:
        """A sequencing pass (migration 0005): cursors for every change committed since the
        last pass; the newest it gave, None if there was nothing (or, not waiting, another
        pass was running)."""
        async with pooled_connection(self._pool) as conn:
            cur = await conn.execute(query("sequence_changes"), {"wait": wait})
            row = await cur.fetchone()
        return format_cursor(int(row[0])) if row and row[0] is not None else None

    async def prune(self, older_than: timedelta, *, batch: int = PRUNE_BATCH) -> int:
        """Delete changes older than ``older_than``, a batch per transaction; how many went.
        Each batch follows a pass, so changes nobody has read yet are numbered, then aged."""
        cutoff = datetime.now(UTC) - older_than
        total = 0
        while True:
            async with pooled_connection(self._pool) as conn, conn.transaction():
                await conn.execute(query("sequence_changes"), {"wait": True})
                cur = await conn.execute(query("prune_changes"), {"cutoff": cutoff, "batch": batch})
                row = await cur.fetchone()
            pruned = int(row[0]) if row else 0
            total += pruned
            if pruned < batch:
                return total

    async def totals(self) -> dict[ChangeType, int]:
        """Changes ever written, by type."""
        async with pooled_connection(self._pool) as conn:
            await conn.execute(query("sequence_changes"), {"wait": False})  # counted by a pass
            cur = await conn.execute(query("change_totals"))
            rows = await cur.fetchall()
        return {cast(ChangeType, row[0]): int(row[1]) for row in rows}

    async def _head(self) -> tuple[int, int]:
        """The head after a pass (if none is running): "now" includes what just committed."""
        async with pooled_connection(self._pool) as conn:
            await conn.execute(query("sequence_changes"), {"wait": False})
            cur = await conn.execute(query("change_head"))
            row = await cur.fetchone()
        assert row is not None  # migration 0005 inserts the one head row
        return int(row[0]), int(row[1])


def _check_since(after: int, head: int, pruned_through: int) -> None:
    if after < pruned_through:
        raise CursorExpired(
            f"cursor {format_cursor(after)} is older than the changes kept "
            f"(pruned through {format_cursor(pruned_through)}): re-read the map, "
            f"then resume from cursor {format_cursor(head)}",
            cursor=format_cursor(head),
        )
    if after > head:
        raise CursorExpired(
            f"cursor {format_cursor(after)} is past this node's newest change: re-read the "
            f"map, then resume from cursor {format_cursor(head)}",
            cursor=format_cursor(head),
        )


def _change(row: tuple[Any, ...]) -> Change:
    seq, kind, at, service_id, node_id, from_state, to_state, service = row
    return Change(
        cursor=format_cursor(int(seq)),
        type=kind,
        at=at,
        service_id=service_id,
        node_id=node_id,
        from_state=from_state,
        to_state=to_state,
        service=_service(service),
    )


def _service(document: dict[str, Any]) -> Service:
    """The service a trigger stored (``ronin_change_service``), as the map's queries read it."""
    state_since = document.get("state_since")
    last_checked = document.get("last_checked")
    return Service(
        service_id=document["service_id"],
        node_id=document["node_id"],
        node_class=document["node_class"],
        endpoint=document["endpoint"],
        capabilities=_strings(document.get("capabilities")),
        discovery_metadata=_object(document.get("discovery_metadata")),
        last_seen=datetime.fromisoformat(document["last_seen"]),
        state=document.get("state") or "alive",
        state_since=datetime.fromisoformat(state_since) if state_since else None,
        last_checked=datetime.fromisoformat(last_checked) if last_checked else None,
    )


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _timestamp(at: datetime) -> str:
    """UTC, milliseconds, ``Z``: the protocol's example, ``2026-12-02T14:00:00.123Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@cache
def _service_adapter() -> TypeAdapter[Service]:
    """A service as the API writes it; pydantic is imported by the first change written out."""
    from pydantic import TypeAdapter

    return TypeAdapter(Service)


__all__ = [
    "CHANGE_TYPES",
    "CHANNEL",
    "EVERY_CHANGE",
    "PENDING",
    "Change",
    "ChangeFeed",
    "ChangeFilter",
    "ChangePage",
    "ChangeType",
    "format_cursor",
    "parse_cursor",
]
