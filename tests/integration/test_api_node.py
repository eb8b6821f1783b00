"""KLF messages, schedules, health, metrics and the OpenAPI document, in-process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.discovery.descriptor import parse_descriptor
from ronin.store.jobs import JobStore
from tests.integration.api_support import NODE_ID, api_client, assert_error, job_params


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


def klf_request(payload: dict[str, Any], kind: str = "TASK_REQUEST") -> dict[str, Any]:
    return {"type": kind, "from": "did:kos:griot:7f3a9c", "to": NODE_ID, "payload": payload}


async def test_a_klf_task_request_queues_the_job_and_answers_with_its_event_stream(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    message = klf_request({"task_name": "run_discovery_job", "params": job_params()})
    answer = await client.post("/v1/klf", json=message)
    assert answer.status_code == 202, answer.text
    reply = answer.json()
    assert reply["type"] == "TASK_PROGRESS"
    assert reply["from"] == NODE_ID
    assert reply["to"] == "did:kos:griot:7f3a9c"
    job_id = reply["payload"]["job_id"]
    assert reply["payload"]["task_name"] == "run_discovery_job"
    assert reply["payload"]["events_url"] == f"/v1/jobs/{job_id}/events?for=did:kos:griot:7f3a9c"
    job = await store.get(uuid.UUID(job_id))
    assert job.params == job_params()
    assert job.status == "pending"


async def test_a_klf_task_request_without_protocols_probes_http_api(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    bare = {"target": {"type": "network_cidr", "value": "127.0.0.1/32"}}
    message = klf_request({"task_name": "run_discovery_job", "params": bare})
    answer = await client.post("/v1/klf", json=message)
    assert answer.status_code == 202, answer.text
    job = await store.get(uuid.UUID(answer.json()["payload"]["job_id"]))
    assert job.params == bare | {"protocols": ["http-api"]}
    document = (await client.get("/openapi.json")).json()
    envelope = document["paths"]["/v1/klf"]["post"]["requestBody"]["content"]
    params = envelope["application/json"]["schema"]["properties"]["payload"]["properties"]
    assert params["params"]["required"] == ["target"]


async def test_a_schedule_without_protocols_probes_http_api(client: httpx.AsyncClient) -> None:
    bare = {"target": {"type": "network_cidr", "value": "127.0.0.1/32"}}
    body = {"name": "bare", "params": bare, "interval_s": 3600}
    created = await client.post("/v1/schedules", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["params"]["protocols"] == ["http-api"]


@pytest.mark.parametrize(
    ("message", "status", "code", "field"),
    [
        (klf_request({}, kind="HEARTBEAT"), 422, "UNSUPPORTED_MESSAGE", "type"),
        (klf_request({"task_name": "sing"}), 422, "UNSUPPORTED_MESSAGE", "payload.task_name"),
        (klf_request({"task_name": "run_discovery_job"}), 422, "INVALID_VALUE", "payload.params"),
        (
            klf_request({"task_name": "run_discovery_job", "params": {"target": 1}}),
            422,
            "INVALID_TARGET",
            "target",
        ),
        (
            klf_request({"task_name": "run_discovery_job", "params": job_params("10.0.0.0/8")}),
            403,
            "FORBIDDEN_TARGET",
            None,
        ),
    ],
)
async def test_a_klf_message_this_node_does_not_run_is_refused_in_klf(
    client: httpx.AsyncClient,
    store: JobStore,
    message: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    answer = await client.post("/v1/klf", json=message)
    assert_error(answer, status, code, field)
    reply = answer.json()
    assert reply["type"] == "TASK_RESPONSE"
    assert reply["to"] == "did:kos:griot:7f3a9c"
    assert reply["payload"]["status"] == "failed"
    assert reply["payload"]["error"]["code"] == code
    assert (await store.list_jobs()).items == []


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "TASK_REQUEST", "to": NODE_ID, "payload": {}}, "from"),
        ({**klf_request({}), "from": "griot"}, "from"),
        ({**klf_request({}), "payload": []}, "payload"),
        ({**klf_request({}), "signature": "x"}, "signature"),
        ([], None),
    ],
)
async def test_a_malformed_klf_envelope_is_refused_naming_the_field(
    client: httpx.AsyncClient, message: Any, field: str | None
) -> None:
    assert_error(await client.post("/v1/klf", json=message), 422, "INVALID_VALUE", field)


async def test_schedules_are_added_listed_and_removed(client: httpx.AsyncClient) -> None:
    body = {"name": "nightly", "params": job_params(), "interval_s": 86400}
    created = await client.post("/v1/schedules", json=body)
    assert created.status_code == 201
    assert created.json()["name"] == "nightly"
    assert_error(await client.post("/v1/schedules", json=body), 409, "ALREADY_EXISTS", "name")
    listed = (await client.get("/v1/schedules")).json()
    assert [s["schedule_id"] for s in listed] == [created.json()["schedule_id"]]
    assert (await client.delete("/v1/schedules/nightly")).status_code == 204
    assert (await client.get("/v1/schedules")).json() == []
    assert_error(await client.delete("/v1/schedules/nightly"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "x", "params": job_params(), "interval_s": 59}, "INVALID_VALUE", "interval_s"),
        ({"name": "", "params": job_params(), "interval_s": 60}, "INVALID_VALUE", "name"),
        ({"name": "x", "params": {}, "interval_s": 60}, "INVALID_TARGET", "target"),
        ({"name": "x", "params": job_params(), "interval_s": 60, "y": 1}, "INVALID_VALUE", "y"),
    ],
)
async def test_an_invalid_schedule_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], code: str, field: str
) -> None:
    assert_error(await client.post("/v1/schedules", json=body), 422, code, field)


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}
    await client.post("/v1/jobs", json=job_params())
    metrics = (await client.get("/metrics")).text
    assert 'ronin_jobs{status="pending"} 1.0' in metrics
    assert "ronin_services 0.0" in metrics
    for name in (
        "ronin_job_claim_seconds",
        "ronin_probes_total",
        "ronin_probe_seconds",
        "ronin_change_streams",
        "ronin_change_stream_lag_seconds",
    ):
        assert f"# TYPE {name} " in metrics


async def test_metrics_count_the_changes_written_by_type(
    client: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO discovered_services VALUES ('m:1', 'did:kos:musa:m', 'Musa', "
            "'http://127.0.0.1:9/', '[]', '{}', now()), ('m:2', 'did:kos:musa:m', 'Musa', "
            "'http://127.0.0.1:9/', '[]', '{}', now())"
        )
        await conn.execute("DELETE FROM discovered_services WHERE service_id = 'm:1'")
    metrics = (await client.get("/metrics")).text
    assert 'ronin_changes_written{type="service_added"} 2.0' in metrics
    assert 'ronin_changes_written{type="service_removed"} 1.0' in metrics
    assert 'ronin_changes_written{type="service_state"} 0.0' in metrics


async def test_a_node_on_an_out_of_date_schema_is_alive_but_not_ready(
    fresh_database: str,
) -> None:
    async with (
        AsyncConnectionPool(fresh_database, min_size=1, open=False) as pool,
        api_client(fresh_database, pool) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert_error(await client.get("/readyz"), 503, "SCHEMA_OUT_OF_DATE")


async def test_the_openapi_document_describes_every_route_and_its_errors(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/results",
        "/v1/jobs/{job_id}/events",
        "/v1/services",
        "/v1/services/{service_id}",
        "/v1/nodes",
        "/v1/klf",
        "/v1/schedules",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
    for path, operations in paths.items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            assert "401" in operation["responses"], (method, path)
            assert "HTTPValidationError" not in str(operation["responses"]), (method, path)


async def test_the_node_describes_itself_as_a_kos_node(client: httpx.AsyncClient) -> None:
    answer = await client.get("/.well-known/kos-node")
    assert answer.status_code == 200
    descriptor = parse_descriptor(answer.content)
    assert descriptor.node_id == NODE_ID
    assert descriptor.node_class == "Ronin"
    [service] = descriptor.services
    assert service.endpoint == "http://ronin.test:80/v1/klf"
    assert descriptor.skipped == ()
