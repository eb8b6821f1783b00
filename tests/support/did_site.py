"""A did:web site over real HTTPS on loopback, with a test CA (trustme): DID documents and a
kOS descriptor, each path answering what the test says."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trustme
from aiohttp import web

from ronin.discovery.http_probe import tls_context

HOST = "localhost"  # did:web needs a name; localhost resolves to loopback everywhere


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class DidSite:
    """Paths and their answers; ``port`` is known once the site listens."""

    port: int = 0
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"https://{HOST}:{self.port}"

    def did(self, *path: str) -> str:
        """The did:web DID of this site (with its port), under ``path`` if given."""
        return ":".join([f"did:web:{HOST}%3A{self.port}", *path])

    def serve(self, path: str, body: Any, status: int = 200, **headers: str) -> None:
        self.answers[path] = Answer(status, body, headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        answer = self.answers.get(request.path)
        if answer is None:
            return web.Response(status=404)
        body = answer.body if isinstance(answer.body, bytes) else orjson.dumps(answer.body)
        return web.Response(
            status=answer.status,
            body=body,
            content_type="application/json",
            headers=answer.headers,
        )


@dataclass(frozen=True)
class TrustedCA:
    """A certificate authority the test trusts, and a client context that trusts it."""

    ca: trustme.CA
    bundle: Path

    def client_context(self) -> ssl.SSLContext:
        return tls_context(self.bundle)


def new_ca(directory: Path) -> TrustedCA:
    """A fresh CA whose root is written to ``directory`` as a PEM bundle."""
    ca = trustme.CA()
    bundle = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return TrustedCA(ca, bundle)


@asynccontextmanager
async def did_site(ca: TrustedCA) -> AsyncIterator[DidSite]:
    """An HTTPS site on 127.0.0.1 whose certificate (for ``localhost``) ``ca`` issued."""
    site = DidSite()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.ca.issue_cert(HOST, "127.0.0.1").configure_cert(server_context)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", site._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await tcp.start()
    assert tcp._server is not None
    site.port = tcp._server.sockets[0].getsockname()[1]
    try:
        yield site
    finally:
        await runner.cleanup()
