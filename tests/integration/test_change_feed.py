"""The change feed's log and its reader (PROTOCOL.md section 9): one record per change, none
for a re-sighting, cursors in commit order whatever order the writes were made in, and a hub
that misses nothing when its notifications are lost."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.errors import CursorExpired, InvalidCursor
from ronin.store.change_hub import ChangeHub, Heartbeat
from ronin.store.changes import EVERY_CHANGE, Change, ChangeFeed, ChangeFilter, format_cursor
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap

START = format_cursor(0)


def sighting(service_id: str, *, endpoint: str = "http://127.0.0.1:1/", **extra: Any) -> Sighting:
    fields: dict[str, Any] = {
        "service_id": service_id,
        "node_id": "did:kos:griot:feed",
        "node_class": "Griot",
        "endpoint": endpoint,
        "capabilities": ["knowledge_preservation"],
        "metadata": {"discovery_method": "http_probe", "response_time_ms": 3},
        "seen_at": datetime.now(UTC),
        "job_id": "00000000-0000-4000-8000-000000000001",
        "rank": (0,),
    }
    return Sighting(**(fields | extra))


async def everything(feed: ChangeFeed, since: str = START) -> list[Change]:
    """The whole log after ``since``, page by page."""
    found: list[Change] = []
    while True:
        page = await feed.page(since, limit=7)
        found += page.changes
        since = page.cursor
        if not page.more:
            return found


async def execute(db_url: str, statement: str, *args: Any) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(statement, args or None)


def insert_sql(service_id: str) -> str:
    return (
        "INSERT INTO discovered_services (service_id, node_id, node_class, endpoint, "
        f"capabilities, discovery_metadata, last_seen) VALUES ('{service_id}', "
        "'did:kos:musa:hand', 'Musa', 'http://127.0.0.1:2/', '[\"media\"]', '{}', now())"
    )


@pytest.fixture
def feed(pool: AsyncConnectionPool[Any]) -> ChangeFeed:
    return ChangeFeed(pool)


async def test_the_map_writes_one_record_per_change_and_none_for_a_re_sighting(
    service_map: ServiceMap, feed: ChangeFeed
) -> None:
    await service_map.upsert([sighting("svc:a"), sighting("svc:b")])
    await service_map.upsert(
        [sighting("svc:a", metadata={"discovery_method": "http_probe", "response_time_ms": 9})]
    )
    assert [(c.type, c.service_id) for c in await everything(feed)] == [
        ("service_added", "svc:a"),
        ("service_added", "svc:b"),
    ]
    mark = await feed.current()

    await service_map.upsert([sighting("svc:a", endpoint="http://127.0.0.1:3/")])
    changed = await everything(feed, mark)
    assert [(c.type, c.service_id) for c in changed] == [("service_changed", "svc:a")]
    assert changed[0].service.endpoint == "http://127.0.0.1:3/"
    assert changed[0].to_json()["service"]["endpoint"] == "http://127.0.0.1:3/"
    assert "from" not in changed[0].to_json()


async def test_rows_written_by_hand_are_logged_with_states_from_and_to(
    db_url: str, feed: ChangeFeed
) -> None:
    await execute(db_url, insert_sql("hand:1"))
    await execute(db_url, "UPDATE discovered_services SET last_seen = now()")  # nothing
    await execute(db_url, "UPDATE service_liveness SET misses = 1")  # nothing either
    await execute(db_url, 'UPDATE discovered_services SET capabilities = \'["media", "x"]\'')
    await execute(db_url, "UPDATE service_liveness SET state = 'suspect'")
    await execute(db_url, "UPDATE service_liveness SET state = 'gone'")
    await execute(db_url, "DELETE FROM discovered_services")

    log = await everything(feed)
    assert [(c.type, c.from_state, c.to_state) for c in log] == [
        ("service_added", None, None),
        ("service_changed", None, None),
        ("service_state", "alive", "suspect"),
        ("service_state", "suspect", "gone"),
        ("service_removed", None, None),
    ]
    assert [c.service.state for c in log] == ["alive", "alive", "suspect", "gone", "gone"]
    assert [c.seq for c in log] == list(range(1, 6))
    record = log[2].to_json()
    assert (record["from"], record["to"], record["service"]["state"]) == (
        "alive",
        "suspect",
        "suspect",
    )
    keys = ["cursor", "type", "at", "service_id", "node_id", "from", "to", "service"]
    assert list(record) == keys
    assert record["at"].endswith("Z")
    assert len(record["cursor"]) == 16
    assert await feed.totals() == {
        "service_added": 1,
        "service_changed": 1,
        "service_removed": 1,
        "service_state": 2,
    }


async def test_a_transaction_that_wrote_first_but_commits_last_is_read_after_the_others(
    db_url: str, feed: ChangeFeed
) -> None:
    # The textbook trap: the early writer would hold the smaller number. Cursors are given at
    # commit, so a reader that has read past the later writer still gets the early one.
    async with await psycopg.AsyncConnection.connect(db_url) as early:
        await early.execute(insert_sql("early"))
        await execute(db_url, insert_sql("late"))
        first = await feed.page(START)
        assert [c.service_id for c in first.changes] == ["late"]
        await early.commit()
    second = await feed.page(first.cursor)
    assert [c.service_id for c in second.changes] == ["early"]
    assert second.changes[0].seq > first.changes[0].seq


@dataclass
class Commit:
    service_ids: list[str]
    started: float  # monotonic, just before COMMIT was sent
    ended: float  # monotonic, once COMMIT returned


async def test_concurrent_writers_committing_out_of_order_are_read_exactly_once_in_commit_order(
    db_url: str, feed: ChangeFeed
) -> None:
    rng = random.Random(20261203)
    commits: list[Commit] = []

    async def writer(number: int) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            for round_ in range(15):
                ids = [f"w{number}:{round_}:{i}" for i in range(rng.randint(1, 4))]
                for service_id in ids:
                    await conn.execute(insert_sql(service_id))
                await asyncio.sleep(rng.random() * 0.01)  # hold its changes, uncommitted
                started = time.monotonic()
                await conn.commit()
                commits.append(Commit(ids, started, time.monotonic()))

    read: list[Change] = []
    done = asyncio.Event()

    async def reader() -> None:
        since = START
        while True:
            finished = done.is_set()
            page = await feed.page(since, limit=5)
            read.extend(page.changes)
            since = page.cursor
            if finished and not page.more:
                return
            if not page.more:
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(6)))
    done.set()
    await reading

    written = [sid for commit in commits for sid in commit.service_ids]
    assert sorted(c.service_id for c in read) == sorted(written)  # every one, exactly once
    assert [c.seq for c in read] == sorted(c.seq for c in read)
    cursor_of = {c.service_id: c.seq for c in read}
    for commit in commits:  # one transaction's changes are consecutive, in its order
        seqs = [cursor_of[sid] for sid in commit.service_ids]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # Commit order: whenever one commit had returned before another began, its cursors are
    # the smaller ones.
    ordered = 0
    for a in commits:
        for b in commits:
            if a.ended < b.started:
                ordered += 1
                assert cursor_of[a.service_ids[-1]] < cursor_of[b.service_ids[0]]
    assert ordered > len(commits)  # the check had pairs to compare


async def test_a_cursor_older_than_the_changes_kept_is_expired_with_one_that_works(
    db_url: str, feed: ChangeFeed
) -> None:
    for n in range(3):
        await execute(db_url, insert_sql(f"old:{n}"))
    assert await feed.prune(timedelta(0), batch=2) == 3
    with pytest.raises(CursorExpired) as expired:
        await feed.page(START)
    assert expired.value.cursor == format_cursor(3)
    assert expired.value.as_dict()["cursor"] == format_cursor(3)

    await execute(db_url, insert_sql("new"))
    page = await feed.page(expired.value.cursor)
    assert [c.service_id for c in page.changes] == ["new"]
    assert await feed.current() == format_cursor(4)

    with pytest.raises(CursorExpired):  # past the head: another database's cursor
        await feed.page(format_cursor(99))
    with pytest.raises(InvalidCursor):
        await feed.page("not-a-cursor")
    assert await feed.prune(timedelta(hours=1)) == 0  # the young one stays


async def test_a_filtered_page_reads_past_what_it_skips_and_its_cursor_moves_on(
    db_url: str, feed: ChangeFeed
) -> None:
    await execute(db_url, insert_sql("musa:1"))
    await execute(
        db_url,
        "INSERT INTO discovered_services VALUES ('griot:1', 'did:kos:griot:g', 'Griot', "
        "'http://127.0.0.1:4/', '[\"knowledge_preservation\", \"oral\"]', '{}', now())",
    )
    griots = await feed.page(START, ChangeFilter(node_class="griot"))
    assert [c.service_id for c in griots.changes] == ["griot:1"]
    both = await feed.page(START, ChangeFilter(capabilities=("oral", "knowledge_preservation")))
    assert [c.service_id for c in both.changes] == ["griot:1"]
    none = await feed.page(START, ChangeFilter(node_id="did:kos:nobody"))
    assert (none.changes, none.cursor, none.more) == ([], format_cursor(2), False)


async def follow(
    hub: ChangeHub, since: str, count: int, where: ChangeFilter = EVERY_CHANGE
) -> AsyncIterator[list[Change]]:
    """Batches from the hub until ``count`` changes came; heartbeats skipped."""
    got = 0
    async for item in hub.follow(since, where, heartbeat_s=0.2):
        if isinstance(item, Heartbeat):
            continue
        yield item
        got += len(item)
        if got >= count:
            return


async def test_the_hub_misses_nothing_while_its_listener_is_killed_again_and_again(
    db_url: str, pool: AsyncConnectionPool[Any], feed: ChangeFeed
) -> None:
    async with ChangeHub(feed, db_url, poll_s=0.3) as hub:
        start = await feed.current()
        total = 120
        received: list[Change] = []

        async def consume() -> None:
            async for batch in follow(hub, start, total):
                received.extend(batch)

        consuming = asyncio.create_task(consume())
        kills = 0
        for n in range(total):
            await execute(db_url, insert_sql(f"k:{n}"))
            if n % 10 == 5:
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN%%ronin_changes%%' AND pid <> pg_backend_pid()"
                    )
                    row = await cur.fetchone()
                    kills += int(row[0]) if row else 0
        await asyncio.wait_for(consuming, 60)
    assert kills >= 3  # the listener was there to kill, and came back each time
    assert [c.service_id for c in received] == [f"k:{n}" for n in range(total)]


async def test_streams_that_start_behind_the_ring_catch_up_from_the_table(
    db_url: str, feed: ChangeFeed
) -> None:
    async with ChangeHub(feed, db_url, ring_size=4, poll_s=0.2) as hub:
        for n in range(30):
            await execute(db_url, insert_sql(f"r:{n}"))
        live = follow(hub, await feed.current(), 1)
        late = asyncio.create_task(anext(live))
        await asyncio.sleep(0)
        await execute(db_url, insert_sql("r:live"))
        assert [c.service_id for c in await asyncio.wait_for(late, 30)] == ["r:live"]
        await live.aclose()

        behind: list[Change] = []
        async for batch in follow(hub, START, 31):
            behind.extend(batch)
    assert [c.service_id for c in behind] == [f"r:{n}" for n in range(30)] + ["r:live"]


async def test_a_stream_with_nothing_to_send_beats_with_the_current_cursor(
    db_url: str, feed: ChangeFeed
) -> None:
    await execute(db_url, insert_sql("beat"))
    async with ChangeHub(feed, db_url, poll_s=0.2) as hub:
        stream = hub.follow(None, heartbeat_s=0.05)
        first = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
    assert first == Heartbeat(format_cursor(1))


async def test_ending_the_streams_ends_a_stream_waiting_for_changes(
    db_url: str, feed: ChangeFeed
) -> None:
    async with ChangeHub(feed, db_url, poll_s=0.2) as hub:
        received: list[list[Change] | Heartbeat] = []

        async def consume() -> None:
            async for item in hub.follow(None, heartbeat_s=3600):
                received.append(item)

        consuming = asyncio.create_task(consume())
        for _ in range(1000):  # until the stream is waiting (bounded)
            if hub.streams:
                break
            await asyncio.sleep(0.01)
        hub.end_streams()
        await asyncio.wait_for(consuming, 10)  # ended, not waiting an hour for a heartbeat
    assert received == []
    assert hub.streams == 0


async def test_a_filtered_stream_beats_while_other_services_keep_changing(
    db_url: str, feed: ChangeFeed
) -> None:
    # Its filter matches nothing that is written: without a heartbeat on a clock of its own,
    # the stream would say nothing for as long as the others change.
    async with ChangeHub(feed, db_url, poll_s=0.2, coalesce_s=0.0) as hub:
        stop = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                await execute(db_url, insert_sql(f"busy:{n}"))
                n += 1

        writing = asyncio.create_task(write())
        beats: list[Heartbeat] = []
        stream = hub.follow(None, ChangeFilter(node_id="did:kos:nobody"), heartbeat_s=0.3)
        try:
            async with asyncio.timeout(60):  # a bound, not a measurement
                async for item in stream:
                    assert isinstance(item, Heartbeat)  # nothing it asked for
                    beats.append(item)
                    if len(beats) == 3:
                        break
        finally:
            stop.set()
            await writing
            await stream.aclose()
    assert int(beats[0].cursor) < int(beats[2].cursor)  # others changed all along
