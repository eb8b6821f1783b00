"""``/v1/jobs``: submit, read, list, cancel, results and live KLF events, in-process."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.api.limits import MAX_BODY_BYTES
from ronin.store.jobs import JobStore
from tests.integration.api_support import NODE_ID, api_client, assert_error, job_params
from tests.integration.jobs_support import running_worker, wait_for
from tests.support.executors import target


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


def sse_messages(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, KLF message) of every Server-Sent Event in a stream's text."""
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and ": " in line)
        if "data" in fields:
            messages.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return messages


async def test_a_submitted_job_is_stored_pending_and_can_be_read_back(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    answer = await client.post("/v1/jobs", json=job_params())
    assert answer.status_code == 202
    job = answer.json()
    assert job["status"] == "pending"
    assert job["params"] == job_params()
    assert answer.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert (await store.get(uuid.UUID(job["job_id"]))).status == "pending"
    again = await client.get(answer.headers["location"])
    assert again.status_code == 200
    assert again.json() == job


async def test_a_job_without_protocols_probes_http_api_and_says_so(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    bare = {"target": {"type": "network_cidr", "value": "127.0.0.1/32"}}
    answer = await client.post("/v1/jobs", json=bare)
    assert answer.status_code == 202, answer.text
    assert answer.json()["params"]["protocols"] == ["http-api"]
    stored = await store.get(uuid.UUID(answer.json()["job_id"]))
    assert stored.params == bare | {"protocols": ["http-api"]}
    schema = (await client.get("/openapi.json")).json()["paths"]["/v1/jobs"]["post"]
    params = schema["requestBody"]["content"]["application/json"]["schema"]
    assert params["required"] == ["target"]


async def test_a_single_word_domain_is_refused(client: httpx.AsyncClient, store: JobStore) -> None:
    answer = await client.post("/v1/jobs", json=job_params("intranet", "domain"))
    assert_error(answer, 422, "INVALID_TARGET", "target.value")
    assert "single word" in answer.json()["error"]["message"]
    assert (await store.list_jobs()).items == []


async def test_jobs_are_listed_newest_first_by_status_a_page_at_a_time(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await client.post("/v1/jobs", json=job_params())).json()["job_id"] for _ in range(3)]
    await client.delete(f"/v1/jobs/{ids[0]}")
    first = (await client.get("/v1/jobs", params={"limit": 2})).json()
    assert [job["job_id"] for job in first["items"]] == ids[:0:-1]
    rest = await client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [job["job_id"] for job in rest.json()["items"]] == ids[:1]
    pending = (await client.get("/v1/jobs", params={"status": "pending"})).json()
    assert {job["job_id"] for job in pending["items"]} == set(ids[1:])


async def test_an_idempotency_key_gives_a_retried_submission_the_first_job(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    headers = {"Idempotency-Key": "nightly-2026-11-29"}
    answers = await asyncio.gather(
        *(client.post("/v1/jobs", json=job_params(), headers=headers) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    assert len((await store.list_jobs()).items) == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "INVALID_JSON", None),
        (b"[1, 2]", 422, "INVALID_TARGET", "params"),
        (orjson.dumps({**job_params(), "depth": "deep"}), 422, "INVALID_TARGET", "depth"),
        (orjson.dumps({**job_params(), "colour": "red"}), 422, "INVALID_TARGET", "colour"),
        (orjson.dumps(job_params("x" * 300, "domain")), 422, "INVALID_TARGET", "target.value"),
        (orjson.dumps(job_params("10.0.0.0/8")), 403, "FORBIDDEN_TARGET", None),
        (orjson.dumps(job_params("127.0.0.1/33")), 422, "INVALID_TARGET", "target.value"),
        (b'{"target": NaN}', 400, "INVALID_JSON", None),
    ],
)
async def test_an_invalid_job_is_refused_with_its_code_and_nothing_is_stored(
    client: httpx.AsyncClient,
    store: JobStore,
    body: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    answer = await client.post("/v1/jobs", content=body)
    assert_error(answer, status, code, field)
    assert (await store.list_jobs()).items == []


async def test_a_body_over_the_cap_is_refused_before_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    huge = {**job_params(), "padding": "x" * MAX_BODY_BYTES}
    assert_error(await client.post("/v1/jobs", json=huge), 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 4096

    assert_error(await client.post("/v1/jobs", content=chunks()), 413, "PAYLOAD_TOO_LARGE")


async def test_bad_ids_cursors_and_keys_get_a_4xx_in_the_one_shape(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get(f"/v1/jobs/{uuid.uuid4()}"), 404, "NOT_FOUND", "job_id")
    assert_error(await client.get("/v1/jobs/not-a-uuid"), 422, "INVALID_VALUE", "job_id")
    assert_error(await client.get("/v1/jobs", params={"cursor": "!!"}), 400, "INVALID_CURSOR")
    assert_error(await client.get("/v1/jobs", params={"limit": 0}), 422, "INVALID_VALUE", "limit")
    assert_error(
        await client.get("/v1/jobs", params={"status": "lost"}), 422, "INVALID_VALUE", "status"
    )
    long_key = {"Idempotency-Key": "k" * 300}
    assert_error(
        await client.post("/v1/jobs", json=job_params(), headers=long_key),
        422,
        "INVALID_VALUE",
        "Idempotency-Key",
    )
    assert_error(await client.get("/v1/nowhere"), 404, "NOT_FOUND")
    assert_error(await client.put("/v1/jobs"), 405, "METHOD_NOT_ALLOWED")


async def test_cancelling_a_pending_job_fails_it_at_once_and_a_second_cancel_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    job_id = (await client.post("/v1/jobs", json=job_params())).json()["job_id"]
    answer = await client.delete(f"/v1/jobs/{job_id}")
    assert answer.status_code == 202
    assert answer.json()["status"] == "failed"
    assert answer.json()["error"]["code"] == "CANCELLED"
    assert_error(await client.delete(f"/v1/jobs/{job_id}"), 409, "JOB_FINISHED")
    assert_error(await client.delete(f"/v1/jobs/{uuid.uuid4()}"), 404, "NOT_FOUND")


async def test_results_page_through_what_a_job_found(
    client: httpx.AsyncClient, db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    job_id = (await client.post("/v1/jobs", json=target("noop"))).json()["job_id"]
    async with running_worker(db_url, pool):
        await wait_for(store, uuid.UUID(job_id))
    results = (await client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1})).json()
    assert results["status"] == "completed"
    assert results["result"]["services"] == {"new": 1, "refreshed": 0}
    [found] = results["items"]
    assert found["outcome"] == "new"
    assert found["service"]["service_id"] == f"did:kos:service:{job_id}"
    attempts = (await client.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert [a["outcome"] for a in attempts] == ["completed"]


async def test_events_of_a_finished_job_are_its_final_klf_message_at_once(
    client: httpx.AsyncClient, db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    job_id = (await client.post("/v1/jobs", json=target("noop"))).json()["job_id"]
    async with running_worker(db_url, pool):
        await wait_for(store, uuid.UUID(job_id))
    answer = await client.get(f"/v1/jobs/{job_id}/events", params={"for": "did:kos:griot:7f"})
    assert answer.headers["content-type"].startswith("text/event-stream")
    [(event, message)] = sse_messages(answer.text)
    assert event == "TASK_RESPONSE"
    assert message["type"] == "TASK_RESPONSE"
    assert message["from"] == NODE_ID
    assert message["to"] == "did:kos:griot:7f"
    payload = message["payload"]
    assert payload["task_name"] == "run_discovery_job"
    assert payload["job_id"] == job_id
    assert payload["status"] == "completed"
    [service] = payload["result"]["services_found"]
    assert service["service_id"] == f"did:kos:service:{job_id}"


async def test_events_follow_a_running_job_live_then_end_with_its_response(
    client: httpx.AsyncClient, db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    job_id = (await client.post("/v1/jobs", json=target("steps:4"))).json()["job_id"]
    async with running_worker(db_url, pool):
        answer = await client.get(f"/v1/jobs/{job_id}/events")
    messages = sse_messages(answer.text)
    kinds = [event for event, _ in messages]
    assert kinds[-1] == "TASK_RESPONSE"
    assert set(kinds[:-1]) == {"TASK_PROGRESS"}
    progress = [m["payload"]["progress"] for event, m in messages if event == "TASK_PROGRESS"]
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert all(m["payload"]["status"] == "running" for _, m in messages[:-1])
    assert messages[-1][1]["payload"]["status"] == "completed"


async def test_events_of_a_cancelled_job_end_with_a_failed_response(
    client: httpx.AsyncClient,
) -> None:
    job_id = (await client.post("/v1/jobs", json=job_params())).json()["job_id"]
    stream = asyncio.create_task(client.get(f"/v1/jobs/{job_id}/events"))
    await asyncio.sleep(0.3)
    await client.delete(f"/v1/jobs/{job_id}")
    answer = await asyncio.wait_for(stream, timeout=30)
    [(event, message)] = sse_messages(answer.text)
    assert event == "TASK_RESPONSE"
    assert message["payload"]["status"] == "failed"
    assert message["payload"]["error"]["code"] == "CANCELLED"
    assert_error(await client.get(f"/v1/jobs/{uuid.uuid4()}/events"), 404, "NOT_FOUND")
