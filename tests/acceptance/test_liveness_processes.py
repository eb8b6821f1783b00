"""The live map in real processes (issue 12): ``ronin discover --wait`` finds a fleet of beacons
and checks nothing; a ``ronin worker`` re-verifies it every second. Nodes that stop become
suspect then gone, the rest stay alive; when every node stops at once the partition guard keeps
them unverified and the map heals when they come back; two workers never check a node twice in
one round.

Every wait is polling with a bounded overall wait; no time is asserted.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ronin.beacon import BeaconServer, demo_descriptor
from tests.acceptance.serve_support import environment, served_node
from tests.acceptance.test_worker_processes import Workers
from tests.support.fleet import addresses

ROOT = Path(__file__).parents[2]
PORT = 30437
FLEET = 20
WAIT_S = 90
POLL_S = 0.05
VERIFY = {"RONIN_VERIFY_INTERVAL_S": "1"}

pytestmark = pytest.mark.slow


class Fleet:
    """Beacons served from a thread of their own, each its own server so that any of them can
    stop and start again; descriptor GETs are counted per node across restarts."""

    def __init__(self, network: str) -> None:
        self.network = network
        self.hosts = addresses(network, FLEET, seed=12)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: dict[str, BeaconServer] = {}
        self._counted: Counter[str] = Counter()

    def __enter__(self) -> Fleet:
        self.thread.start()
        self.start(*range(FLEET))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(*(i for i, host in enumerate(self.hosts) if host in self._servers))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self, *indexes: int) -> None:
        async def start() -> None:
            for index in indexes:
                host = self.hosts[index]
                server = BeaconServer()
                await server.add(host, PORT, demo_descriptor(host, PORT))
                self._servers[host] = server

        self._run(start())

    def stop(self, *indexes: int) -> None:
        async def stop() -> None:
            for index in indexes:
                host = self.hosts[index]
                server = self._servers.pop(host)
                self._counted[host] += server.requests[(host, PORT)]
                await server.close()

        self._run(stop())

    def gets(self) -> dict[str, int]:
        """Descriptor GETs per host, since the fleet started."""

        async def count() -> dict[str, int]:
            live = {h: s.requests[(h, PORT)] for h, s in self._servers.items()}
            return {h: self._counted[h] + live.get(h, 0) for h in self.hosts}

        return self._run(count())  # type: ignore[no-any-return]

    def node_ids(self, *indexes: int) -> set[str]:
        return {str(demo_descriptor(self.hosts[i], PORT)["node_id"]) for i in indexes}


def discover(db_url: str, network: str) -> None:
    """``ronin discover NETWORK --wait``, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "ronin", "discover", network, "--port", str(PORT), "--wait"],
        cwd=ROOT,
        env=environment(RONIN_DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout


def states(db_url: str) -> dict[str, dict[str, str]]:
    """node_id -> service_id -> state."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT s.node_id, s.service_id, l.state FROM discovered_services AS s "
            "JOIN service_liveness AS l USING (service_id)"
        ).fetchall()
    found: dict[str, dict[str, str]] = {}
    for node_id, service_id, state in rows:
        found.setdefault(node_id, {})[service_id] = state
    return found


def node_states(db_url: str, node_ids: set[str]) -> set[str]:
    """Every state the services of ``node_ids`` are in."""
    return {state for n, held in states(db_url).items() if n in node_ids for state in held.values()}


def scalar(db_url: str, sql: str) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def poll(condition: Callable[[], bool], *, check: Callable[[], None] | None = None) -> None:
    """Wait for ``condition``, asserting ``check`` at every look; bounded by WAIT_S overall."""
    deadline = time.monotonic() + WAIT_S
    while True:
        if check is not None:
            check()
        if condition():
            return
        assert time.monotonic() < deadline, "timed out"
        time.sleep(POLL_S)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def discovered(db_url: str, network: str) -> Fleet:
    fleet = Fleet(network).__enter__()
    try:
        discover(db_url, network)
    except BaseException:
        fleet.__exit__()
        raise
    assert len(states(db_url)) == FLEET
    # discover --wait does not verify
    assert (
        scalar(db_url, "SELECT count(*) FROM service_liveness WHERE last_checked IS NOT NULL") == 0
    )
    return fleet


def all_checked(db_url: str) -> bool:
    return bool(scalar(db_url, "SELECT bool_and(last_checked IS NOT NULL) FROM service_liveness"))


def test_the_nodes_that_stop_go_suspect_then_gone_and_the_rest_stay_alive(
    db_url: str, workers: Workers
) -> None:
    fleet = discovered(db_url, "127.91.0.0/27")
    try:
        workers.start_discovery(db_url, **VERIFY)
        everyone = fleet.node_ids(*range(FLEET))
        poll(lambda: all_checked(db_url))
        assert node_states(db_url, everyone) == {"alive"}

        dead = fleet.node_ids(3, 11)
        living = everyone - dead
        fleet.stop(3, 11)
        seen: set[str] = set()

        def the_living_stay_alive() -> None:
            assert node_states(db_url, living) == {"alive"}
            now = node_states(db_url, dead)
            assert now <= {"alive", "suspect", "gone"}
            seen.update(now)

        poll(lambda: node_states(db_url, dead) == {"gone"}, check=the_living_stay_alive)
        # A failed check makes gone only a suspect service: every gone one failed 2+ times.
        misses = scalar(db_url, "SELECT min(misses) FROM service_liveness WHERE state = 'gone'")
        assert misses >= 2
        assert scalar(db_url, "SELECT count(*) FROM service_liveness WHERE state = 'gone'") == 4
        assert "gone" in workers.log(0)
    finally:
        fleet.__exit__()


def test_when_every_node_stops_the_guard_keeps_them_unverified_then_the_map_heals(
    db_url: str, workers: Workers
) -> None:
    fleet = discovered(db_url, "127.92.0.0/27")
    try:
        workers.start_discovery(db_url, **VERIFY)
        everyone = fleet.node_ids(*range(FLEET))
        poll(lambda: all_checked(db_url))

        fleet.stop(*range(FLEET))

        def none_gone() -> None:
            assert "gone" not in node_states(db_url, everyone)

        poll(lambda: node_states(db_url, everyone) == {"unverified"}, check=none_gone)
        time.sleep(3)  # three more intervals: still none gone (asserted, not timed)
        assert node_states(db_url, everyone) == {"unverified"}
        log = workers.log(0)
        assert log.count("partition guard holds") == 1, log
        assert "failing services become unverified" in log

        fleet.start(*range(FLEET))
        poll(lambda: node_states(db_url, everyone) == {"alive"}, check=none_gone)
    finally:
        fleet.__exit__()


def test_two_workers_never_check_a_node_twice_in_one_round(db_url: str, workers: Workers) -> None:
    fleet = discovered(db_url, "127.93.0.0/27")
    try:
        for _ in range(2):
            workers.start_discovery(db_url, **VERIFY)
        rounds_sql = f"SELECT count(*) = {FLEET} AND min(round) >= 4 FROM node_checks"
        poll(lambda: bool(scalar(db_url, rounds_sql)))
        workers.stop_all()
        with psycopg.connect(db_url) as conn:
            rounds = dict(conn.execute("SELECT node_id, round FROM node_checks").fetchall())
        gets = fleet.gets()
        by_node = {str(demo_descriptor(h, PORT)["node_id"]): gets[h] for h in fleet.hosts}
        # One GET by the discovery, then exactly one per round: none was checked twice.
        assert by_node == {node_id: 1 + rounds[node_id] for node_id in by_node}
        for index in range(2):
            assert "verifying the map every 1s" in workers.log(index)
    finally:
        fleet.__exit__()


def test_serve_verifies_with_job_slots_and_not_without(db_url: str, tmp_path: Path) -> None:
    fleet = discovered(db_url, "127.94.0.0/27")
    try:
        with served_node(tmp_path, db_url, "--workers", "0", **VERIFY) as node:
            time.sleep(2)  # two intervals in which an API-only node must check nothing
            assert "verifying the map" not in node.log()
        assert not scalar(db_url, "SELECT bool_or(last_checked IS NOT NULL) FROM service_liveness")
        with served_node(tmp_path, db_url, "--workers", "1", **VERIFY) as node:
            poll(lambda: all_checked(db_url))
            assert node.stop() == 0
        assert "verifying the map every 1s" in node.log()
    finally:
        fleet.__exit__()
