"""Discovery in real worker processes: kill -9 mid-scan, and the next worker resumes."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ronin.beacon import BeaconServer
from tests.acceptance.test_worker_processes import Workers, scalar, wait_until
from tests.support.fleet import addresses, honest_fleet

TARGET = "127.46.0.0/20"
PORT = 30437


class BeaconThread:
    """A fleet of beacons served from a thread of its own, so the test can stay synchronous."""

    def __init__(self, hosts: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server = BeaconServer()
        self.fleet: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(hosts,), daemon=True)

    def _run(self, hosts: list[str]) -> None:
        async def start() -> None:
            self.fleet = await honest_fleet(self.server, hosts, PORT)
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    def __enter__(self) -> BeaconThread:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def requests(self) -> dict[tuple[str, int], int]:
        return {beacon.key: self.server.requests[beacon.key] for beacon in self.fleet}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def submit(db_url: str, params: dict[str, Any]) -> uuid.UUID:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO discovery_jobs (status, params) VALUES ('pending', %s) RETURNING job_id",
            (Jsonb(params),),
        ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_scan_killed_mid_run_resumes_without_probing_again(db_url: str, workers: Workers) -> None:
    hosts = addresses(TARGET, 200, seed=8)
    with BeaconThread(hosts) as beacons:
        job_id = submit(
            db_url,
            {
                "target": {"type": "network_cidr", "value": TARGET},
                "protocols": ["http-api"],
                "ports": [PORT],
                "rate": 400,
                "concurrency": 64,
            },
        )
        # No re-verification: its descriptor GETs would count as probes of the scan.
        env = {"RONIN_ALLOW": "127.46.0.0/16", "RONIN_VERIFY_INTERVAL_S": "0"}
        first = workers.start_discovery(db_url, **env)
        wait_until(
            lambda: (
                scalar(db_url, "SELECT progress FROM discovery_job_state WHERE job_id = %s", job_id)
                >= 50
            )
        )
        probed_before = sum(1 for hits in beacons.requests().values() if hits)
        first.kill()
        first.wait(timeout=10)

        workers.start_discovery(db_url, **env)
        wait_until(
            lambda: (
                scalar(db_url, "SELECT status FROM discovery_jobs WHERE job_id = %s", job_id)
                == "completed"
            )
        )
        requests = beacons.requests()

    assert all(hits >= 1 for hits in requests.values()), "a node was never probed"
    probed_twice = sum(1 for hits in requests.values() if hits > 1)
    # Starting over would probe every node found before the kill again; a resumed scan
    # repeats only its last checkpoint's window (blocks in flight, probes since the write).
    assert probed_before >= 80
    assert probed_twice <= 30, (probed_twice, probed_before)
    outcomes = scalar(
        db_url,
        "SELECT array_agg(outcome ORDER BY started_at) "
        "FROM discovery_job_attempts WHERE job_id = %s",
        job_id,
    )
    assert outcomes == ["lost", "completed"]
    result = scalar(db_url, "SELECT result FROM discovery_job_state WHERE job_id = %s", job_id)
    services = scalar(db_url, "SELECT count(*) FROM discovered_services")
    # Nothing lost between the attempts: every node has both its services in the map, or
    # its probe failed with a reason (a descriptor fetch can time out on a loaded machine).
    missing = len(hosts) - services // 2
    failed = sum(result["failed_probes"].values())
    assert services % 2 == 0
    assert missing <= failed, (services, result)
    assert result["stats"]["nodes"] >= len(hosts) - failed, result
