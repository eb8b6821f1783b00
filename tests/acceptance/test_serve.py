"""``ronin serve`` as operators and other nodes meet it: a real process on a real database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from tests.acceptance.serve_support import beacon, environment, served_node

READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
TOKENS = f"read:{READ},write:{WRITE}"
TEST_EXECUTOR = "tests.support.executors:run"


def scalar(db_url: str, sql: str) -> Any:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def cidr_job(value: str, port: int) -> dict[str, Any]:
    return {
        "target": {"type": "network_cidr", "value": value},
        "protocols": ["http-api"],
        "ports": [port],
    }


async def klf_events(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every KLF message of a job's event stream, read live until the stream ends."""
    messages = []
    async with client.stream("GET", path) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if line.startswith("data:"):
                messages.append(orjson.loads(line[5:]))
    return messages


def test_a_node_migrates_serves_runs_a_job_and_streams_it(
    tmp_path: Path, fresh_database: str
) -> None:
    with (
        beacon(tmp_path, "127.66.0.1") as node,
        served_node(
            tmp_path,
            fresh_database,
            "--workers",
            "2",
            "--host",
            "127.66.0.2",
            RONIN_ALLOW="127.66.0.0/24",
        ) as ronin,
    ):
        port = int(node.url.rsplit(":", 1)[1])

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=ronin.url, timeout=30) as client:
                assert (await client.get("/readyz")).status_code == 200
                submitted = await client.post("/v1/jobs", json=cidr_job("127.66.0.0/29", port))
                assert submitted.status_code == 202
                job_id = submitted.json()["job_id"]
                messages = await klf_events(client, f"/v1/jobs/{job_id}/events")
                final = messages[-1]
                assert final["type"] == "TASK_RESPONSE"
                assert final["payload"]["status"] == "completed"
                found = final["payload"]["result"]["services_found"]
                assert found
                assert {s["node_id"] for s in found} == {node.node_id}
                services = await client.get("/v1/services", params={"node_id": node.node_id})
                assert {s["service_id"] for s in services.json()["items"]} == {
                    s["service_id"] for s in found
                }
                # The node is itself a kOS node: a Ronin finds it like any other.
                own_port = int(ronin.url.rsplit(":", 1)[1])
                itself = await client.post("/v1/jobs", json=cidr_job("127.66.0.2", own_port))
                events = f"/v1/jobs/{itself.json()['job_id']}/events"
                [service] = (await klf_events(client, events))[-1]["payload"]["result"][
                    "services_found"
                ]
                assert service["node_class"] == "Ronin"
                assert service["endpoint"] == f"{ronin.url}/v1/klf"

        asyncio.run(scenario())
        assert ronin.stop() == 0


def test_a_thousand_concurrent_submissions_are_each_stored_once(
    tmp_path: Path, db_url: str
) -> None:
    with served_node(tmp_path, db_url, "--workers", "0") as ronin:

        async def submit_all() -> list[httpx.Response | BaseException]:
            # A connection each: a client's reuse of a pooled connection is not what this tests.
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=ronin.url, timeout=120, limits=limits) as client:
                keys = [f"key-{i}" for i in range(1000)] + [f"key-{i}" for i in range(0, 1000, 10)]
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/jobs",
                            json=cidr_job("127.0.0.1/32", 30437),
                            headers={"Idempotency-Key": key},
                        )
                        for key in keys
                    ),
                    return_exceptions=True,
                )

        outcomes = asyncio.run(submit_all())
        failures = [repr(o.__cause__ or o) for o in outcomes if isinstance(o, BaseException)]
        assert failures == [], f"{len(failures)} requests failed: {failures[:5]}\n{ronin.log()}"
        answers = [o for o in outcomes if isinstance(o, httpx.Response)]
        assert {answer.status_code for answer in answers} == {202}
        by_key: dict[str, set[str]] = {}
        for answer in answers:
            key = answer.request.headers["idempotency-key"]
            by_key.setdefault(key, set()).add(answer.json()["job_id"])
        assert len(by_key) == 1000
        assert all(len(ids) == 1 for ids in by_key.values())
        assert len({next(iter(ids)) for ids in by_key.values()}) == 1000
        assert scalar(db_url, "SELECT count(*) FROM discovery_jobs") == 1000
        assert ronin.stop() == 0


def test_sigterm_ends_streams_and_hands_running_jobs_back(tmp_path: Path, db_url: str) -> None:
    with served_node(
        tmp_path, db_url, "--workers", "1", "--executor", TEST_EXECUTOR, RONIN_SHUTDOWN_GRACE_S="1"
    ) as ronin:

        async def scenario() -> str:
            async with httpx.AsyncClient(base_url=ronin.url, timeout=30) as client:
                params = {"target": {"type": "did", "value": "did:kos:test:hang"}}
                job = await client.post("/v1/jobs", json={**params, "protocols": ["http-api"]})
                job_id = job.json()["job_id"]
                for _ in range(1200):  # bounded: a minute
                    if (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "running":
                        break
                    await asyncio.sleep(0.05)
                stream = asyncio.create_task(klf_events(client, f"/v1/jobs/{job_id}/events"))
                await asyncio.sleep(0.5)
                ronin.popen.send_signal(signal.SIGTERM)
                await asyncio.wait_for(stream, timeout=20)  # the stream ends, not hangs
                return str(job_id)

        job_id = asyncio.run(scenario())
        assert ronin.stop() == 0
        status, attempts = scalar(
            db_url,
            "SELECT array[status, attempts::text] FROM discovery_jobs_with_state "
            f"WHERE job_id = '{uuid.UUID(job_id)}'",
        )
        assert status == "pending"
        assert attempts == "0"


def test_without_tokens_a_public_address_is_refused(tmp_path: Path, db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ronin", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=environment(RONIN_DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "RONIN_API_TOKENS" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_operator_commands_talk_to_a_remote_node(tmp_path: Path, db_url: str) -> None:
    with served_node(tmp_path, db_url, "--workers", "0", RONIN_API_TOKENS=TOKENS) as ronin:

        def remote(*args: str, token: str = WRITE) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ronin", *args],
                env=environment(RONIN_URL=ronin.url, RONIN_TOKEN=token),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        added = remote("schedules", "add", "nightly", "127.0.0.1/32", "--every", "1d")
        assert added.returncode == 0, added.stderr
        listed = json.loads(remote("schedules", "list", "--json", token=READ).stdout)
        assert [(s["name"], s["interval_s"]) for s in listed] == [("nightly", 86400)]
        refused = remote("schedules", "add", "hourly", "127.0.0.1/32", token=READ)
        assert refused.returncode == 1
        assert "write scope" in refused.stderr
        unknown = remote("jobs", "list", token="not-a-token-0123456789")
        assert unknown.returncode == 1
        assert "unknown token" in unknown.stderr
        assert remote("schedules", "remove", "nightly").returncode == 0
        assert json.loads(remote("schedules", "list", "--json").stdout) == []

        submitted = httpx.post(
            f"{ronin.url}/v1/jobs",
            json=cidr_job("127.0.0.1/32", 30437),
            headers={"Authorization": f"Bearer {WRITE}"},
        ).json()
        jobs = json.loads(remote("jobs", "list", "--json", token=READ).stdout)
        assert [job["job_id"] for job in jobs["items"]] == [submitted["job_id"]]
        shown = json.loads(remote("jobs", "show", submitted["job_id"], "--json").stdout)
        assert shown["job"]["status"] == "pending"
        assert remote("jobs", "cancel", submitted["job_id"]).returncode == 0
        followed = remote("jobs", "follow", submitted["job_id"])
        assert followed.returncode == 1  # the job ended failed (cancelled)
        assert "failed" in followed.stdout
        services = json.loads(remote("services", "--capability", "klf", "--json").stdout)
        assert services == {"items": [], "next_cursor": None}
        queued = json.loads(remote("discover", "127.0.0.1/32", "--json").stdout)
        assert queued["status"] == "pending"
        assert scalar(db_url, "SELECT count(*) FROM discovery_jobs") == 2
        started = time.monotonic()
        assert ronin.stop() == 0
        assert time.monotonic() - started < 30
