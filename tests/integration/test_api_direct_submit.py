"""``POST /v1/jobs`` is answered in front of FastAPI (``ronin.api.direct_submit``); every
answer it gives is the one the framework's route gives to the same request, and every request
it does not take still reaches the route."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ronin.api.app import NodeApp
from ronin.api.direct_submit import DirectSubmit
from ronin.api.limits import MAX_BODY_BYTES
from ronin.store.jobs import JobStore
from tests.integration.api_support import (
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    api_app,
    call,
    http_scope,
    job_params,
)

JOBS = "/v1/jobs"
#: What varies between two answers to the same submission: the job's id and its times.
VOLATILE = {"job_id", "created_at", "run_after", "updated_at"}


class Both:
    """One app, called two ways: as served (the direct path first) and through FastAPI only."""

    def __init__(self, app: NodeApp) -> None:
        self.app = app
        self.served = _client(app)
        self.framework = _client(functools.partial(FastAPI.__call__, app))

    async def post(self, **request: Any) -> tuple[httpx.Response, httpx.Response]:
        return await self.served.post(JOBS, **request), await self.framework.post(JOBS, **request)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ronin.test")


@asynccontextmanager
async def both_on(
    db_url: str, pool: AsyncConnectionPool[Any], **overrides: Any
) -> AsyncIterator[Both]:
    """The app on this test's database, and its two clients."""
    async with api_app(db_url, pool, **overrides) as app:
        assert isinstance(app, NodeApp)
        both = Both(app)
        async with both.served, both.framework:
            yield both


@pytest.fixture
async def both(db_url: str, pool: AsyncConnectionPool[Any]) -> AsyncIterator[Both]:
    async with both_on(db_url, pool) as opened:
        yield opened


@pytest.fixture
async def guarded(db_url: str, pool: AsyncConnectionPool[Any]) -> AsyncIterator[Both]:
    async with both_on(db_url, pool, api_tokens=TOKENS) as opened:
        yield opened


def same_error(served: httpx.Response, framework: httpx.Response) -> None:
    """Two error answers alike: status, body, and the headers a client acts on."""
    assert served.status_code >= 400, served.text
    assert (served.status_code, served.content) == (framework.status_code, framework.content)
    for header in ("content-type", "content-length", "www-authenticate", "retry-after"):
        assert served.headers.get(header) == framework.headers.get(header), header


def same_job(served: httpx.Response, framework: httpx.Response) -> dict[str, Any]:
    """Two new jobs alike but for their ids and times; the served one's answer."""
    assert (served.status_code, framework.status_code) == (202, 202), served.text
    assert set(served.headers) == set(framework.headers)
    assert served.headers["content-type"] == framework.headers["content-type"]
    job, other = served.json(), framework.json()
    assert list(job) == list(other)  # the same fields, in the same order
    assert {k: v for k, v in job.items() if k not in VOLATILE} == {
        k: v for k, v in other.items() if k not in VOLATILE
    }
    assert served.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert int(served.headers["content-length"]) == len(served.content)
    return dict(job)


async def test_a_submission_is_answered_as_the_route_answers_it(
    both: Both, store: JobStore
) -> None:
    params = {"target": {"type": "network_cidr", "value": "127.0.0.1/32"}, "depth": 1}
    job = same_job(*await both.post(json=params))
    assert job["status"] == "pending"
    assert job["params"]["protocols"]  # the defaults written in, as the route writes them
    stored = await store.get(job["job_id"])
    assert orjson.loads(orjson.dumps(stored, default=str))["params"] == job["params"]
    assert both.app.direct_submit.state.node.group_commit.jobs == 2  # both went in groups


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"content": b"{not json"}, 400),
        ({"content": b""}, 400),
        ({"json": []}, 422),
        ({"json": {"target": {"type": "network_cidr", "value": "127.0.0.1/32"}, "x": 1}}, 422),
        ({"json": job_params("10.0.0.0/33")}, 422),
        ({"json": job_params("8.8.8.8/32")}, 403),  # outside the scope policy
        ({"json": job_params("127.0.0.0/8")}, 403),  # wider than it allows
        ({"content": b" " * (MAX_BODY_BYTES + 1)}, 413),  # declared too large
        ({"content": iter([b" " * 40_000] * 2)}, 413),  # chunked, too large once it arrives
    ],
)
async def test_a_refused_submission_gets_the_routes_error(
    both: Both, store: JobStore, request_kwargs: dict[str, Any], status: int
) -> None:
    if isinstance(request_kwargs.get("content"), Iterator):
        chunks = list(request_kwargs.pop("content"))
        served = await both.served.post(JOBS, content=streamed(chunks))
        framework = await both.framework.post(JOBS, content=streamed(chunks))
    else:
        served, framework = await both.post(**request_kwargs)
    same_error(served, framework)
    assert served.status_code == status
    assert (await store.list_jobs()).items == []


async def streamed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """A body sent chunked: no Content-Length to refuse it by."""
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nobody-has-this-token"}, 401),
        ({"Authorization": f"Basic {WRITE_TOKEN}"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": f"Bearer {READ_TOKEN}"}, 403),
        ({"Cookie": f"ronin_session={WRITE_TOKEN}"}, 401),  # a cookie never writes
    ],
)
async def test_a_submission_without_the_write_scope_gets_the_routes_error(
    guarded: Both, store: JobStore, headers: dict[str, str], status: int
) -> None:
    served, framework = await guarded.post(json=job_params(), headers=headers)
    same_error(served, framework)
    assert served.status_code == status
    assert (await store.list_jobs()).items == []


async def test_two_authorization_headers_get_the_routes_error(guarded: Both) -> None:
    headers = [("Authorization", f"Bearer {WRITE_TOKEN}")] * 2
    same_error(*await guarded.post(json=job_params(), headers=headers))


async def test_a_write_token_submits(guarded: Both) -> None:
    headers = {"Authorization": f"bearer  {WRITE_TOKEN} "}  # the scheme in any case, spaced
    same_job(*await guarded.post(json=job_params(), headers=headers))


async def test_a_full_queue_gets_the_routes_429(
    db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    async with both_on(db_url, pool, max_pending_jobs=1) as both:
        assert (await both.served.post(JOBS, json=job_params())).status_code == 202
        served, framework = await both.post(json=job_params())
        same_error(served, framework)
        assert served.status_code == 429
        assert served.headers["retry-after"] == "1"


async def test_a_client_that_leaves_gets_the_routes_answer_and_one_log_line(
    db_url: str, pool: AsyncConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    scope = http_scope("POST", JOBS, (b"content-length", b"100"))
    chunks = [{"type": "http.request", "body": b'{"target":', "more_body": True}]
    async with api_app(db_url, pool) as app:
        with caplog.at_level(logging.INFO, logger="ronin.api.errors"):
            served = await call(app, dict(scope), list(chunks))
            framework = await call(functools.partial(FastAPI.__call__, app), dict(scope), chunks)
    assert served == framework
    assert served[0]["status"] == 400
    assert len(caplog.records) == 2  # one line each


async def test_an_unexpected_error_is_logged_once_and_answered_500(
    both: Both, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = both.app.direct_submit.state.node

    async def broken(self: Any, params: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(type(node), "submit", broken)
    with caplog.at_level(logging.ERROR):
        served, framework = await both.post(json=job_params())
    same_error(served, framework)
    assert served.status_code == 500
    assert "a bug" not in served.text
    failed = [r for r in caplog.records if r.getMessage() == f"POST {JOBS} failed"]
    assert len(failed) == 2  # once per answer
    assert all(r.exc_info for r in failed)


@pytest.mark.parametrize(
    ("method", "path", "headers", "taken"),
    [
        ("POST", JOBS, [], True),
        ("POST", JOBS, [(b"content-type", b"application/json")], True),
        ("POST", JOBS, [(b"idempotency-key", b"k")], False),  # FastAPI checks the header
        ("GET", JOBS, [], False),
        ("POST", f"{JOBS}/", [], False),
        ("POST", f"{JOBS}/batch", [], False),
        ("POST", "/v1/klf", [], False),
    ],
)
def test_only_plain_submissions_take_the_direct_path(
    method: str, path: str, headers: list[tuple[bytes, bytes]], taken: bool
) -> None:
    assert DirectSubmit.takes(http_scope(method, path, *headers)) is taken
    assert DirectSubmit.takes({"type": "websocket", "path": JOBS, "headers": []}) is False


async def test_a_keyed_submission_still_reaches_the_route(both: Both) -> None:
    key = {"Idempotency-Key": "the-same-key"}
    first = await both.served.post(JOBS, json=job_params(), headers=key)
    again = await both.served.post(JOBS, json=job_params(), headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    too_long = {"Idempotency-Key": "k" * 256}
    assert (await both.served.post(JOBS, json=job_params(), headers=too_long)).status_code == 422
