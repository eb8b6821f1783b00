"""Hostile input to the API: every answer is the one error shape with a 4xx, nothing reaches
SQL that PostgreSQL would refuse, nothing escapes as a traceback, and the client's Host and
Authorization headers decide nothing they should not."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.jobs import JobStore
from tests.integration.api_support import (
    NODE_ID,
    TOKENS,
    WRITE_TOKEN,
    api_app,
    api_client,
    assert_error,
    call,
    http_scope,
    job_params,
)

SENDER = "did:kos:griot:7f3a9c"


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


def klf(**fields: Any) -> bytes:
    """A run_discovery_job request with ``fields`` replaced, as JSON."""
    message = {
        "type": "TASK_REQUEST",
        "from": SENDER,
        "to": NODE_ID,
        "payload": {"task_name": "run_discovery_job", "params": job_params()},
    }
    return orjson.dumps(message | fields)


def klf_params(params: Any) -> bytes:
    return klf(payload={"task_name": "run_discovery_job", "params": params})


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records at ERROR or above, or carrying a traceback."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


HOSTILE_KLF_BODIES = [
    b"1",
    b'"TASK_REQUEST"',
    b"null",
    b"[]",
    b"[[[[]]]]",
    b"[" * 2000 + b"]" * 2000,
    b'{"a":' * 500 + b"1" + b"}" * 500,
    b"1e400",
    b"123456789012345678901234567890",
    b"\xff\xfe{}",
    b'{"type": "\xff"}',
    b'{"type": "\\ud800", "from": "did:kos:a", "to": "did:kos:b", "payload": {}}',
    klf(type=1),
    klf(type=None),
    klf(type=["TASK_REQUEST"]),
    klf(type="TASK_REQUEST\x00"),
    klf(**{"from": 1}),
    klf(**{"from": {"did": SENDER}}),
    klf(**{"from": SENDER + "\x00"}),
    klf(**{"from": SENDER + "\n"}),
    klf(to=[NODE_ID]),
    klf(payload=[]),
    klf(payload="run_discovery_job"),
    klf(payload=None),
    klf(payload={"task_name": ["run_discovery_job"], "params": {}}),
    klf(payload={"task_name": "run_discovery_job\x00", "params": job_params()}),
    klf(payload={"deep": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}),
    klf_params([]),
    klf_params("127.0.0.1/32"),
    klf_params(None),
    klf_params({"target": {"type": "network_cidr", "value": "127.0.0.1/32"}, "x\x00": 1}),
    klf_params(job_params("a\x00b.org", "domain")),
    klf_params({**job_params(), "depth": 1.0e300}),
    klf_params({**job_params(), "ports": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]}),
    klf_params({**job_params(), "depth": "1" * 5000}),
]


@pytest.mark.parametrize("body", HOSTILE_KLF_BODIES)
async def test_a_hostile_klf_body_is_refused_in_the_error_shape_without_a_traceback(
    client: httpx.AsyncClient,
    store: JobStore,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = await client.post("/v1/klf", content=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert_error(answer, answer.status_code, answer.json()["error"]["code"])
    assert tracebacks(caplog) == []
    assert (await store.list_jobs()).items == []


async def test_a_client_that_leaves_mid_body_is_one_log_line(
    db_url: str, pool: AsyncConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with api_app(db_url, pool) as app:
        for path in ("/v1/klf", "/v1/jobs", "/v1/schedules"):
            scope = http_scope("POST", path, (b"content-length", b"100"))
            with caplog.at_level(logging.DEBUG):
                sent = await call(
                    app, scope, [{"type": "http.request", "body": b'{"a":', "more_body": True}]
                )
            assert sent[0]["status"] == 400, sent
            assert set(orjson.loads(sent[1]["body"])["error"]) == {"code", "message"}
    assert tracebacks(caplog) == []
    # The routes that read their own body say why; FastAPI's own body parsing says nothing.
    assert [r.getMessage() for r in caplog.records if r.name == "ronin.api.errors"] == [
        f"POST {path}: the client left before its request body arrived"
        for path in ("/v1/klf", "/v1/jobs")
    ]


async def test_an_unexpected_error_is_logged_once_and_answered_in_the_error_shape(
    db_url: str, pool: AsyncConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug")

    async with api_app(db_url, pool) as app:
        app.add_api_route("/broken", broken)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ronin.test"
        ) as client:
            answer = await client.get("/broken")  # raises if the app re-raised
    assert_error(answer, 500, "INTERNAL")
    assert "a bug" not in answer.text
    [record] = tracebacks(caplog)
    assert record.getMessage() == "GET /broken failed"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/schedules", {"name": "a\x00b", "interval_s": 60}, "name"),
        ("POST", "/v1/schedules", {"name": "\x00", "interval_s": 60}, "name"),
        ("DELETE", "/v1/schedules/a%00b", None, "name_or_id"),
        ("DELETE", "/v1/schedules/%00", None, "name_or_id"),
        ("GET", "/v1/services/a%00b", None, "service_id"),
    ],
)
async def test_a_nul_in_a_name_is_refused_before_sql(
    client: httpx.AsyncClient, method: str, path: str, body: Any, field: str
) -> None:
    if body is not None:
        body = body | {"params": job_params()}
    answer = await client.request(method, path, json=body)
    assert_error(answer, 422, "UNSTORABLE_VALUE", field)
    assert "NUL" in answer.json()["error"]["message"]
    assert (await client.get("/v1/schedules")).json() == []


@pytest.mark.parametrize(
    ("server", "endpoint"),
    [
        (("127.0.0.1", 30437), "http://127.0.0.1:30437/v1/klf"),
        (("::1", 8080), "http://[::1]:8080/v1/klf"),
    ],
)
async def test_the_descriptor_names_the_address_the_node_listens_on_not_the_host_header(
    db_url: str, pool: AsyncConnectionPool[Any], server: tuple[str, int], endpoint: str
) -> None:
    async with api_app(db_url, pool) as app:
        sent = await call(app, http_scope("GET", "/.well-known/kos-node", server=server), [])
    assert sent[0]["status"] == 200
    [service] = orjson.loads(sent[1]["body"])["services"]
    assert service["endpoint"] == endpoint


@pytest.mark.parametrize("path", ["/v1/jobs/", "/v1/services/", "/v1/schedules/", "/healthz/"])
async def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_names(
    client: httpx.AsyncClient, path: str
) -> None:
    answer = await client.get(path, headers={"Host": "evil.example"})
    assert_error(answer, 404, "NOT_FOUND")
    assert "location" not in answer.headers


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/services", "/v1/schedules"])
async def test_two_authorization_headers_are_refused(
    db_url: str, pool: AsyncConnectionPool[Any], path: str
) -> None:
    good, bad = f"Bearer {WRITE_TOKEN}", "Bearer not-a-token-of-this-node"
    async with api_client(db_url, pool, api_tokens=TOKENS) as client:
        assert (await client.get(path, headers={"Authorization": good})).status_code == 200
        for pair in ((good, bad), (bad, good), (good, good)):
            headers = [("Authorization", pair[0]), ("Authorization", pair[1])]
            answer = await client.get(path, headers=headers)
            assert_error(answer, 401, "UNAUTHENTICATED")
            assert "one Authorization header, not 2" in answer.json()["error"]["message"]
