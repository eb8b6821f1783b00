"""The change feed of a real fleet: a discovery logs one service_added per new service, a
re-scan that finds the same nodes logs nothing, a changed descriptor a service_changed, and
re-verification each state a service goes through."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import aiohttp
from psycopg_pool import AsyncConnectionPool

from ronin.store.changes import Change, ChangeFeed, format_cursor
from ronin.store.services import ServiceMap
from tests.integration.test_verifier import (
    FLEET,
    INTERVAL,
    RETRY,
    Fleet,
    discover,
    fleet,  # noqa: F401 (fixture)
    server_now,
    session,  # noqa: F401 (fixture)
    verifier,
)


async def changes_after(feed: ChangeFeed, since: str) -> list[Change]:
    found: list[Change] = []
    while True:
        page = await feed.page(since, limit=1000)
        found += page.changes
        since = page.cursor
        if not page.more:
            return found


async def test_a_fleet_s_feed_holds_each_addition_change_and_state_once(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,  # noqa: F811
    fleet: Fleet,  # noqa: F811
) -> None:
    feed = ChangeFeed(pool)
    everything = fleet.service_ids(*range(FLEET))
    await discover(service_map, session, fleet)
    added = await changes_after(feed, format_cursor(0))
    assert Counter(c.type for c in added) == {"service_added": len(everything)}
    assert sorted(c.service_id for c in added) == sorted(everything)

    mark = await feed.current()
    await discover(service_map, session, fleet)  # the same fleet, seen again
    assert await changes_after(feed, mark) == []

    await fleet.stop(0)
    await fleet.start(0, capabilities=["knowledge_preservation", "oral_history"])
    await discover(service_map, session, fleet)
    changed = await changes_after(feed, mark)
    main_service = next(sid for sid in fleet.service_ids(0) if sid.endswith(":main"))
    assert [(c.type, c.service_id) for c in changed] == [("service_changed", main_service)]
    assert changed[0].service.capabilities == ["knowledge_preservation", "oral_history"]

    checker = verifier(pool, session)
    at = await server_now(pool) + timedelta(seconds=1)
    await checker.run_once(now=at)  # every node answers: no state changes
    mark = await feed.current()
    await fleet.stop(3)
    at += INTERVAL
    await checker.run_once(now=at)
    for _ in range(10):  # the confirmation period: a few retries
        states = await changes_after(feed, mark)
        if states and states[-1].to_state == "gone":
            break
        at += RETRY
        await checker.run_once(now=at)
    stopped = fleet.service_ids(3)
    assert Counter((c.type, c.from_state, c.to_state) for c in states) == {
        ("service_state", "alive", "suspect"): len(stopped),
        ("service_state", "suspect", "gone"): len(stopped),
    }
    assert {c.service_id for c in states} == stopped
    assert all(c.service.state == c.to_state for c in states)
