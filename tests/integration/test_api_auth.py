"""Bearer tokens: every ``/v1`` route refuses a missing, unknown or read-only token where it
should, and the node refuses to serve beyond loopback without tokens."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.cli.serve import check_bind
from ronin.config import Settings
from ronin.errors import InvalidValue
from tests.integration.api_support import (
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    api_client,
    assert_error,
    job_params,
)

SAMPLE_PATH_VALUES = {
    "{job_id}": str(uuid.uuid4()),
    "{service_id}": "did:kos:service:1",
    "{name_or_id}": "nightly",
}


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool, api_tokens=TOKENS) as opened:
        yield opened


async def v1_operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, concrete path) of every /v1 operation in the served OpenAPI document."""
    document = (await client.get("/openapi.json")).json()
    operations = []
    for template, methods in document["paths"].items():
        if not template.startswith("/v1"):
            continue
        path = template
        for placeholder, value in SAMPLE_PATH_VALUES.items():
            path = path.replace(placeholder, value)
        if path.endswith("/changes/stream"):
            # A cursor past the head: answered (410) at once, after the auth, never streamed.
            path += "?since=9999999999999999"
        operations += [(method.upper(), path) for method in methods]
    assert len(operations) >= 12
    return operations


def writes(method: str) -> bool:
    return method in ("POST", "DELETE", "PUT", "PATCH")


async def test_every_v1_route_needs_a_known_token(client: httpx.AsyncClient) -> None:
    for method, path in await v1_operations(client):
        missing = await client.request(method, path)
        assert_error(missing, 401, "UNAUTHENTICATED")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.request(method, path, headers=bearer("not-a-token-of-this-node"))
        assert_error(wrong, 401, "UNAUTHENTICATED")
        basic = await client.request(method, path, headers={"Authorization": "Basic eDp5"})
        assert_error(basic, 401, "UNAUTHENTICATED")


async def test_routes_that_write_need_the_write_scope(client: httpx.AsyncClient) -> None:
    for method, path in await v1_operations(client):
        as_reader = await client.request(method, path, headers=bearer(READ_TOKEN))
        if writes(method):
            assert_error(as_reader, 403, "INSUFFICIENT_SCOPE")
        else:
            assert as_reader.status_code not in (401, 403), (method, path)
        if writes(method):
            as_writer = await client.request(method, path, headers=bearer(WRITE_TOKEN))
            assert as_writer.status_code not in (401, 403), (method, path)


async def test_a_write_token_submits_and_a_read_token_reads(client: httpx.AsyncClient) -> None:
    submitted = await client.post("/v1/jobs", json=job_params(), headers=bearer(WRITE_TOKEN))
    assert submitted.status_code == 202
    read = await client.get(f"/v1/jobs/{submitted.json()['job_id']}", headers=bearer(READ_TOKEN))
    assert read.status_code == 200


async def test_health_and_metrics_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "ronin.example"])
def test_without_tokens_the_node_refuses_to_serve_beyond_loopback(host: str) -> None:
    with pytest.raises(InvalidValue, match="RONIN_API_TOKENS"):
        check_bind(host, Settings())
    check_bind(host, Settings(api_tokens=TOKENS))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"])
def test_without_tokens_loopback_is_served(host: str) -> None:
    check_bind(host, Settings())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
