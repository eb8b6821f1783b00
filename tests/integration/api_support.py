"""The API in-process: the real app on this test's database, called through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp

from ronin.api.app import create_app
from ronin.config import ApiToken, Settings
from ronin.store.database import Database

NODE_ID = "did:kos:ronin:test"
READ_TOKEN = "read-token-0123456789"
WRITE_TOKEN = "write-token-0123456789"
TOKENS = (ApiToken(READ_TOKEN, "read"), ApiToken(WRITE_TOKEN, "write"))


def settings_for(db_url: str, **overrides: Any) -> Settings:
    """Settings of a test node: loopback scope, a fixed DID, no tokens unless given."""
    values: dict[str, Any] = {"database_url": db_url, "allow": "127.0.0.0/8", "node_id": NODE_ID}
    return Settings(**(values | overrides))


@asynccontextmanager
async def api_app(
    db_url: str, pool: AsyncConnectionPool[Any], **overrides: Any
) -> AsyncIterator[FastAPI]:
    """The app, with its lifespan (the job-events listener) running."""
    app = create_app(settings_for(db_url, **overrides), Database(pool=pool, conninfo=db_url))
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def api_client(
    db_url: str, pool: AsyncConnectionPool[Any], **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, with its lifespan (the job-events listener) running."""
    async with api_app(db_url, pool, **overrides) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ronin.test") as client:
            yield client


def job_params(value: str = "127.0.0.1/32", kind: str = "network_cidr") -> dict[str, Any]:
    """Valid params of a job on ``value``."""
    return {"target": {"type": kind, "value": value}, "protocols": ["http-api"]}


def assert_error(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    """``answer`` is an error in the one shape, with this status, code and field."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) <= {"code", "message", "field"}
    if field is not None:
        assert error.get("field") == field, error
    assert "Traceback" not in answer.text


async def call(app: ASGIApp, scope: dict[str, Any], chunks: list[dict[str, Any]]) -> list[Any]:
    """Drive the ASGI app by hand: ``chunks`` are what ``receive`` gives, in order."""
    sent: list[Any] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(
    method: str, path: str, *headers: tuple[bytes, bytes], server: tuple[str, int] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"evil.example"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": server or ("127.0.0.1", 30437),
    }
