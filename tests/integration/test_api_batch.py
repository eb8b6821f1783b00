"""Submissions in bulk: ``POST /v1/jobs/batch``, group commit of concurrent single
submissions, and back-pressure (``RONIN_MAX_PENDING_JOBS``), through the real app."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ronin.api.limits import BATCH_MAX_BODY_BYTES, MAX_BATCH_JOBS, MAX_BODY_BYTES
from ronin.api.state import NodeState
from ronin.store.jobs import JobStore
from tests.integration.api_support import api_app, api_client, assert_error, job_params
from tests.integration.jobs_support import FAST, running_worker, wait_for
from tests.support.executors import target

BATCH = "/v1/jobs/batch"


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


@asynccontextmanager
async def app_and_client(
    db_url: str, pool: AsyncConnectionPool[Any], **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with api_app(db_url, pool, **overrides) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ronin.test") as client:
            yield app, client


def hosts(count: int) -> list[dict[str, Any]]:
    """``count`` distinct valid params (one loopback address each)."""
    return [job_params(f"127.0.{i // 250}.{i % 250 + 1}/32") for i in range(count)]


async def stored_jobs(store: JobStore) -> list[Any]:
    return (await store.list_jobs(limit=500)).items


async def test_a_batch_stores_every_job_and_answers_in_request_order(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    params = hosts(300)
    answer = await client.post(BATCH, json={"jobs": params})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["created"], body["replayed"], body["refused"]) == (300, 0, 0)
    assert [item["index"] for item in body["jobs"]] == list(range(300))
    assert [item["job"]["params"] for item in body["jobs"]] == params
    assert all(item["replayed"] is False for item in body["jobs"])
    ids = [item["job"]["job_id"] for item in body["jobs"]]
    assert len(set(ids)) == 300
    assert {str(job.job_id) for job in await stored_jobs(store)} == set(ids)
    # Each job is the one GET shows.
    for item in body["jobs"][:3]:
        assert (await client.get(f"/v1/jobs/{item['job']['job_id']}")).json() == item["job"]


async def test_invalid_jobs_are_refused_with_their_index_and_code_and_the_others_stored(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    jobs = [
        job_params("127.0.0.1/32"),
        {**job_params(), "depth": "deep"},
        job_params("10.0.0.0/8"),  # outside the test node's scope
        job_params("intranet", "domain"),
        {"params": job_params("127.0.0.2/32"), "colour": "red"},
        {"target": {"type": "domain", "value": "example.org"}},  # protocols default
        [1, 2],
    ]
    answer = await client.post(BATCH, json={"jobs": jobs})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["created"], body["replayed"], body["refused"]) == (2, 0, 5)
    items = body["jobs"]
    assert [item["index"] for item in items] == list(range(7))
    errors = {item["index"]: item["error"] for item in items if "error" in item}
    assert {i: (e["code"], e.get("field")) for i, e in errors.items()} == {
        1: ("INVALID_TARGET", "depth"),
        2: ("FORBIDDEN_TARGET", "target.value"),
        3: ("INVALID_TARGET", "target.value"),
        4: ("INVALID_VALUE", "colour"),
        6: ("INVALID_TARGET", "params"),
    }
    # The same error (message and all) a single submission gets.
    single = await client.post("/v1/jobs", json=jobs[3])
    assert single.json()["error"] == errors[3]
    assert items[5]["job"]["params"]["protocols"] == ["http-api"]
    stored = {str(job.job_id) for job in await stored_jobs(store)}
    assert stored == {items[0]["job"]["job_id"], items[5]["job"]["job_id"]}


async def test_a_batch_of_forbidden_targets_only_is_refused_whole_and_stores_nothing(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    answer = await client.post(BATCH, json={"jobs": [job_params("10.0.0.0/8")] * 2})
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"]["code"] == "BATCH_REFUSED"
    assert [item["error"]["code"] for item in body["jobs"]] == ["FORBIDDEN_TARGET"] * 2
    assert await stored_jobs(store) == []


async def test_idempotency_keys_hold_per_job_and_a_retried_batch_stores_nothing_new(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    earlier = await client.post("/v1/jobs", json=job_params(), headers={"Idempotency-Key": "k0"})
    jobs = [
        {"params": job_params("127.0.0.1/32"), "idempotency_key": "k0"},  # used before
        {"params": job_params("127.0.0.2/32"), "idempotency_key": "k1"},
        job_params("127.0.0.3/32"),
        {"params": job_params("127.0.0.4/32"), "idempotency_key": "k1"},  # twice in the batch
        {"params": job_params("127.0.0.5/32"), "idempotency_key": None},
    ]
    first = (await client.post(BATCH, json={"jobs": jobs})).json()
    assert (first["created"], first["replayed"], first["refused"]) == (3, 2, 0)
    ids = [item["job"]["job_id"] for item in first["jobs"]]
    assert ids[0] == earlier.json()["job_id"]
    assert ids[3] == ids[1]
    assert first["jobs"][1]["job"]["params"] == job_params("127.0.0.2/32")  # the first one's
    assert [item["replayed"] for item in first["jobs"]] == [True, False, False, True, False]
    assert len(await stored_jobs(store)) == 4

    retry = (await client.post(BATCH, json={"jobs": jobs[:2]})).json()
    assert [item["job"]["job_id"] for item in retry["jobs"]] == ids[:2]
    assert [item["replayed"] for item in retry["jobs"]] == [True, True]
    assert retry["created"] == 0
    assert len(await stored_jobs(store)) == 4


async def test_concurrent_batches_sharing_keys_make_one_job_per_key(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    jobs = [{"params": p, "idempotency_key": f"key-{i}"} for i, p in enumerate(hosts(20))]
    answers = await asyncio.gather(
        *(client.post(BATCH, json={"jobs": jobs[i:] + jobs[:i]}) for i in range(0, 20, 4))
    )
    assert {a.status_code for a in answers} == {202}
    assert sum(a.json()["created"] for a in answers) == 20
    assert len(await stored_jobs(store)) == 20


async def test_a_bad_key_refuses_its_job_only(client: httpx.AsyncClient, store: JobStore) -> None:
    jobs = [{"params": job_params(), "idempotency_key": "k" * 256}, job_params()]
    body = (await client.post(BATCH, json={"jobs": jobs})).json()
    assert body["jobs"][0]["error"]["code"] == "INVALID_VALUE"
    assert body["jobs"][0]["error"]["field"] == "idempotency_key"
    assert body["created"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"jobs": []}', 400, "EMPTY_BATCH", "jobs"),
        (
            orjson.dumps({"jobs": [job_params()] * (MAX_BATCH_JOBS + 1)}),
            413,
            "TOO_MANY_JOBS",
            "jobs",
        ),
        (orjson.dumps([job_params()]), 422, "INVALID_VALUE", "jobs"),
        (orjson.dumps({"jobs": job_params()}), 422, "INVALID_VALUE", "jobs"),
        (orjson.dumps({"jobs": [job_params()], "more": 1}), 422, "INVALID_VALUE", "more"),
        (b'{"jobs": [', 400, "INVALID_JSON", None),
    ],
)
async def test_a_malformed_batch_is_refused_whole(
    client: httpx.AsyncClient,
    store: JobStore,
    body: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    assert_error(await client.post(BATCH, content=body), status, code, field)
    assert await stored_jobs(store) == []


async def test_a_request_key_on_a_batch_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        BATCH, json={"jobs": [job_params()]}, headers={"Idempotency-Key": "x"}
    )
    assert_error(answer, 422, "INVALID_VALUE", "Idempotency-Key")


async def test_the_batch_route_has_a_larger_body_cap_than_the_others(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    body = orjson.dumps({"jobs": hosts(MAX_BATCH_JOBS)})
    assert MAX_BODY_BYTES < len(body) < BATCH_MAX_BODY_BYTES
    answer = await client.post(BATCH, content=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["created"] == MAX_BATCH_JOBS
    assert_error(await client.post("/v1/jobs", content=body), 413, "PAYLOAD_TOO_LARGE")
    huge = b'{"jobs": [' + b" " * BATCH_MAX_BODY_BYTES + b"]}"
    assert_error(await client.post(BATCH, content=huge), 413, "PAYLOAD_TOO_LARGE")


async def test_the_openapi_document_describes_the_batch_route(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    route = document["paths"]["/v1/jobs/batch"]["post"]
    schema = route["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["jobs"]["maxItems"] == MAX_BATCH_JOBS
    assert len(schema["properties"]["jobs"]["items"]["oneOf"]) == 2
    assert {"202", "400", "413", "422", "429"} <= set(route["responses"])
    assert "BatchAnswer" in document["components"]["schemas"]
    assert "429" in document["paths"]["/v1/jobs"]["post"]["responses"]


async def test_concurrent_single_submissions_each_get_their_own_job_in_fewer_statements(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    async with app_and_client(db_url, pool) as (app, client):
        state: NodeState = app.state.node
        bodies: list[Any] = hosts(60)
        bodies[17] = job_params("intranet", "domain")
        answers = await asyncio.gather(*(client.post("/v1/jobs", json=b) for b in bodies))
        grouped = state.node.group_commit
    assert_error(answers[17], 422, "INVALID_TARGET", "target.value")
    good = [a for i, a in enumerate(answers) if i != 17]
    assert {a.status_code for a in good} == {202}
    for answer, params in zip(good, bodies[:17] + bodies[18:], strict=True):
        assert answer.json()["params"] == params
        assert answer.headers["location"] == f"/v1/jobs/{answer.json()['job_id']}"
    ids = {a.json()["job_id"] for a in good}
    assert len(ids) == 59
    assert {str(job.job_id) for job in await stored_jobs(store)} == ids
    assert grouped.jobs == 59
    assert grouped.statements < 59  # written together, not one statement each


async def test_submissions_get_429_over_the_pending_cap_and_are_taken_again_after_a_drain(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    async with app_and_client(db_url, pool, max_pending_jobs=5) as (_, client):
        first = await client.post(BATCH, json={"jobs": hosts(4)})
        assert first.status_code == 202
        assert (await client.post("/v1/jobs", json=job_params())).status_code == 202
        refused = await client.post("/v1/jobs", json=job_params())
        assert_error(refused, 429, "QUEUE_FULL")
        assert int(refused.headers["retry-after"]) >= 1
        assert_error(await client.post(BATCH, json={"jobs": hosts(1)}), 429, "QUEUE_FULL")
        assert len(await stored_jobs(store)) == 5
        # Workers drain the queue (here: every job cancelled); the estimate catches up.
        for job in await stored_jobs(store):
            await client.delete(f"/v1/jobs/{job.job_id}")
        assert (await taken_again(client)).status_code == 202
        # A batch that would cross the cap is refused whole.
        assert_error(await client.post(BATCH, json={"jobs": hosts(5)}), 429, "QUEUE_FULL")
        assert (await client.post(BATCH, json={"jobs": hosts(4)})).status_code == 202


async def taken_again(client: httpx.AsyncClient) -> httpx.Response:
    """The first answer to a submission retried until it is not a 429 (bounded)."""
    async with asyncio.timeout(30):
        while True:
            answer = await client.post("/v1/jobs", json=job_params())
            if answer.status_code != 429:
                return answer
            await asyncio.sleep(0.05)


async def test_an_idle_worker_is_woken_for_batch_submitted_jobs(
    client: httpx.AsyncClient, store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    # With an hour between polls, only the batch's notification can start its jobs in time.
    options = dataclasses.replace(FAST, poll_interval=timedelta(hours=1))
    async with running_worker(db_url, pool, options=options):
        await asyncio.sleep(0.5)  # the worker has polled once and is idle
        answer = await client.post(BATCH, json={"jobs": [target("noop")] * 3})
        ids = [uuid.UUID(item["job"]["job_id"]) for item in answer.json()["jobs"]]
        jobs = [await wait_for(store, job_id) for job_id in ids]
    assert [job.status for job in jobs] == ["completed"] * 3
