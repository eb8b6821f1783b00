"""The http-api probe: fetch ``/.well-known/kos-node`` and validate it, bounded everywhere.

Separate connect and total timeouts, a 1 MiB cap on the *decompressed* body (we inflate it
ourselves, a chunk at a time, so a compression bomb stops at the cap), at most 3 redirects,
each re-checked against the scope policy, and a resolver that drops every address the policy
does not allow, so a hostname cannot smuggle a probe out of scope. Any failure is one failed
probe with a reason, never an exception for the caller.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ronin.discovery.descriptor import (
    DESCRIPTOR_PATH,
    MAX_DOCUMENT_BYTES,
    InvalidDescriptor,
    NodeDescriptor,
    parse_descriptor,
)
from ronin.discovery.hosts import MAX_URL_CHARS, parse_probe_url
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.probe_failure import ProbeFailure

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_TOTAL_TIMEOUT_S = 5.0
MAX_REDIRECTS = 3
READ_CHUNK = 64 * 1024
USER_AGENT = "ronin/0.1 (+kos discovery)"


@dataclass(frozen=True, slots=True)
class Fetched:
    """A descriptor fetched and validated."""

    url: str
    descriptor: NodeDescriptor
    response_time_ms: float


@dataclass(frozen=True, slots=True)
class Failed:
    """A failed probe: ``reason`` is a short name counted in job results."""

    url: str
    reason: str
    message: str


class OutOfScope(OSError):
    """A name resolved only to addresses the scope policy does not allow."""


class Unresolvable(OSError):
    """A name the configured DNS server gave no address for."""


class ScopedResolver(AbstractResolver):
    """Resolve names (with the system's resolver, or the DNS server of ``RONIN_DNS``), then
    keep only the addresses the scope policy allows."""

    def __init__(self, policy: ScopePolicy, dns: Resolver | None = None) -> None:
        self._policy = policy
        self._dns = dns
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._dns is None:
            answers = await self._resolver.resolve(host, port, family)
        else:
            answers = await self._resolve_with_dns(host, port, family)
        allowed = [a for a in answers if self._policy.allows(a["host"])]
        if not allowed:
            raise OutOfScope(f"{host} resolves only to addresses outside the scope policy")
        return allowed

    async def _resolve_with_dns(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[ResolveResult]:
        from ronin.discovery import dns_sd  # loaded with the resolver (RONIN_DNS) already

        assert self._dns is not None
        found, failures = await dns_sd.addresses(host, self._dns)
        answers = [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in found
        ]
        answers = [a for a in answers if family in (socket.AF_UNSPEC, a["family"])]
        if not answers:
            raise Unresolvable(f"{host}: no address ({', '.join(failures) or 'none'})")
        return answers

    async def close(self) -> None:
        await self._resolver.close()


def new_session(
    policy: ScopePolicy,
    *,
    concurrency: int,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
    dns: Resolver | None = None,
) -> aiohttp.ClientSession:
    """A client session for one job: bounded connections, no keep-alive, scoped resolver,
    TLS verified against the system's roots (or ``ssl_context``'s)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        force_close=True,  # each node is asked once; idle sockets would only pile up
        resolver=ScopedResolver(policy, dns),
        ttl_dns_cache=60,
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=total_timeout_s, sock_connect=connect_timeout_s, sock_read=total_timeout_s
        ),
        auto_decompress=False,
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        },
        raise_for_status=False,
    )


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verifying TLS: the system's roots, and ``ca_bundle``'s (RONIN_CA_BUNDLE) beside them."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def is_http_url(value: Any) -> TypeGuard[str]:
    """An absolute http(s) URL with a host and a valid port, of a sane length."""
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def descriptor_url(base: str, path: str = DESCRIPTOR_PATH) -> str:
    """The descriptor URL of a node given by its base URL (or any URL on it)."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{path}"


async def fetch_descriptor(
    session: aiohttp.ClientSession, url: str, policy: ScopePolicy, *, total_timeout_s: float
) -> Fetched | Failed:
    """Fetch and validate one descriptor, following at most 3 redirects within scope."""
    document = await fetch_document(session, url, policy, total_timeout_s=total_timeout_s)
    if isinstance(document, Failed):
        return document
    try:
        descriptor = parse_descriptor(document.body)
    except InvalidDescriptor as exc:
        return Failed(url, exc.reason, exc.message)
    return Fetched(document.url, descriptor, document.response_time_ms)


@dataclass(frozen=True, slots=True)
class Document:
    """A JSON document fetched within every bound, not yet parsed."""

    url: str
    body: bytes
    response_time_ms: float


async def fetch_document(
    session: aiohttp.ClientSession, url: str, policy: ScopePolicy, *, total_timeout_s: float
) -> Document | Failed:
    """GET a JSON document of at most 1 MiB, following at most 3 redirects within scope."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(total_timeout_s):
            body, final_url = await _get(session, url, policy)
    except ProbeFailure as exc:
        return Failed(url, exc.reason, exc.message)
    except TimeoutError:
        return Failed(url, "timeout", f"no complete answer within {total_timeout_s}s")
    except aiohttp.ClientError as exc:
        return Failed(url, _client_error_reason(exc), str(exc)[:300] or type(exc).__name__)
    except OSError as exc:
        return Failed(url, _os_error_reason(exc), str(exc)[:300])
    return Document(final_url, body, round((time.monotonic() - started) * 1000, 1))


async def _get(session: aiohttp.ClientSession, url: str, policy: ScopePolicy) -> tuple[bytes, str]:
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(url, policy)
        async with session.get(url, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise ProbeFailure("bad_redirect", "a redirect without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise ProbeFailure("http_status", f"answered {response.status}")
            content_type = response.headers.get("Content-Type", "")
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise ProbeFailure("not_json", f"Content-Type is {content_type[:100]!r}")
            declared = response.content_length
            if declared is not None and declared > MAX_DOCUMENT_BYTES * 16:
                raise ProbeFailure("too_large", f"announces {declared} bytes")
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            return await _read_capped(response, encoding), url
    raise ProbeFailure("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")


def _check_url(url: str, policy: ScopePolicy) -> None:
    """Refuse a URL that is not HTTP, whose host is spelled in a way the client would rewrite,
    or whose literal address is out of scope; a name is checked address by address when the
    scoped resolver resolves it, and the client connects only to the addresses it keeps."""
    target = parse_probe_url(url)  # UnsafeUrl is a ProbeFailure, with its reason
    if target.address is not None and not policy.allows(target.address):
        raise ProbeFailure("out_of_scope", f"{target.host} is outside the scope policy")


async def _read_capped(response: aiohttp.ClientResponse, encoding: str) -> bytes:
    """Read the body, inflating it ourselves, and stop once it passes 1 MiB decompressed."""
    if encoding in ("gzip", "x-gzip"):
        inflater: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    elif encoding in ("identity", ""):
        inflater = None
    else:
        raise ProbeFailure("bad_encoding", f"Content-Encoding {encoding[:50]!r} is not supported")
    body = bytearray()
    limit = MAX_DOCUMENT_BYTES + 1
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        try:
            data = inflater.decompress(chunk, limit - len(body)) if inflater else chunk
        except zlib.error as exc:
            raise ProbeFailure("bad_encoding", f"cannot inflate the body: {exc}") from None
        body += data
        if len(body) >= limit or (inflater is not None and inflater.unconsumed_tail):
            raise ProbeFailure("too_large", f"body over {MAX_DOCUMENT_BYTES} bytes")
    return bytes(body)


def _client_error_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls_error"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_error_reason(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "bad_http"
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_error_reason(exc)
    return "http_error"


def _os_error_reason(exc: OSError) -> str:
    if isinstance(exc, OutOfScope) or isinstance(exc.__cause__, OutOfScope):
        return "out_of_scope"
    if isinstance(exc, Unresolvable) or isinstance(exc.__cause__, Unresolvable):
        return "unresolvable"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "refused"
    if isinstance(exc, ConnectionResetError) or exc.errno == errno.ECONNRESET:
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return "connection_error"
