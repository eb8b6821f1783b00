"""An `mdns` job end to end: `ronin beacon --mdns` in a network namespace the test creates,
Ronin browsing the veth link from the root namespace (and only that link), confirming each
instance by its descriptor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.discovery.crawl import DiscoveryOptions
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.models import ServiceFilter
from ronin.store.services import ServiceMap
from tests.integration.jobs_support import run_discovery_job
from tests.support.netns import VethNamespace

READY_TIMEOUT_S = 30
PORT = 30437


@pytest.fixture
def beacon(link: VethNamespace, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``ronin beacon --mdns`` inside the namespace; yields its node_id and process."""
    log = tmp_path / "beacon.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RONIN_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            link.command(
                sys.executable, "-m", "ronin", "beacon",
                "--host", link.inner_address, "--port", str(PORT),
                "--mdns", "--mdns-interface", link.inner_address,
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "advertised on mDNS" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the beacon did not start:\n{log.read_text()}")
            time.sleep(0.05)
        node_id = log.read_text().split()[1]
        yield node_id, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def discover(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    link: VethNamespace,
    allow: str,
    protocols: list[str],
    target: str | None = None,
) -> Job:
    options = DiscoveryOptions(
        policy=ScopePolicy(parse_networks(allow, field="RONIN_ALLOW")),
        rate=None,
        connect_timeout_s=1,
        total_timeout_s=3,
        mdns_interfaces=(link.root_address,),  # never multicast on any other interface
    )
    params = {
        "target": {"type": "network_cidr", "value": target or f"{link.inner_address}/32"},
        "protocols": protocols,
        "ports": [PORT],
        "mdns_window_s": 2,
    }
    return await run_discovery_job(db_url, pool, store, params, options)


async def test_an_advertised_node_is_found_confirmed_and_mapped(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    link: VethNamespace,
    beacon: tuple[str, subprocess.Popen[bytes]],
) -> None:
    node_id, _ = beacon
    job = await discover(db_url, pool, store, link, f"{link.inner_address}/32", ["mdns"])
    assert job.status == "completed", job.error
    services = (await service_map.find(ServiceFilter(node_id=node_id))).items
    assert len(services) == 2
    assert {s.discovery_metadata["discovery_method"] for s in services} == {"mdns_advertisement"}
    assert job.result is not None
    assert job.result["stats"]["hosts_probed"] == 1


async def test_with_http_api_too_the_node_is_probed_once(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    link: VethNamespace,
    beacon: tuple[str, subprocess.Popen[bytes]],
) -> None:
    node_id, _ = beacon
    job = await discover(
        db_url, pool, store, link, f"{link.inner_address}/32", ["mdns", "http-api"]
    )
    assert job.status == "completed", job.error
    assert job.result is not None
    assert job.result["stats"]["nodes"] == 1
    services = (await service_map.find(ServiceFilter(node_id=node_id))).items
    assert {s.discovery_metadata["discovery_method"] for s in services} == {"mdns_advertisement"}


async def test_an_instance_outside_the_scope_is_not_probed(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    link: VethNamespace,
    beacon: tuple[str, subprocess.Popen[bytes]],
) -> None:
    job = await discover(db_url, pool, store, link, "127.0.0.0/8", ["mdns"], "127.0.0.1/32")
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["failed_probes"] == {"mdns_out_of_scope": 1}
    assert job.result["stats"]["hosts_probed"] == 0
    assert (await service_map.find(ServiceFilter())).items == []


def test_the_beacon_leaves_cleanly_on_sigterm(
    beacon: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, process = beacon
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
