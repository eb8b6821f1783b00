"""did:web resolution (the W3C did:web method; PROTOCOL.md section 4).

``did:web:<host>[%3A<port>][:<path>...]`` names ``https://<host>[:<port>]/<path>/did.json``,
or ``https://<host>[:<port>]/.well-known/did.json`` without a path. The document is fetched
like a descriptor (TLS verified, 1 MiB, 3 redirects, each within scope, through the node's
resolver), its ``id`` must be the DID, and every ``service`` of type ``KosNode`` names a base
URL whose descriptor is then fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson

from ronin.discovery.http_probe import Failed, fetch_document, is_http_url
from ronin.discovery.policy import ScopePolicy

KOS_SERVICE_TYPE = "KosNode"
MAX_SERVICES = 256
MAX_ENDPOINTS = 64


@dataclass(frozen=True, slots=True)
class DidDocument:
    """What a DID document says of a kOS node: the base URLs of its KosNode services."""

    did: str
    url: str
    endpoints: tuple[str, ...]


def document_url(did: str) -> str:
    """The HTTPS URL of a did:web DID's document."""
    host, *path = did.removeprefix("did:web:").split(":")
    host = unquote(host)  # the port is written %3A
    if path:
        return f"https://{host}/{'/'.join(unquote(segment) for segment in path)}/did.json"
    return f"https://{host}/.well-known/did.json"


async def resolve(
    session: aiohttp.ClientSession, did: str, policy: ScopePolicy, *, total_timeout_s: float
) -> DidDocument | Failed:
    """Fetch and check a did:web document; a failure is one failed probe with a reason."""
    url = document_url(did)
    fetched = await fetch_document(session, url, policy, total_timeout_s=total_timeout_s)
    if isinstance(fetched, Failed):
        return fetched
    try:
        document = orjson.loads(fetched.body)
    except orjson.JSONDecodeError:
        return Failed(url, "bad_did_document", "the DID document is not JSON")
    if not isinstance(document, dict):
        return Failed(url, "bad_did_document", "the DID document is not a JSON object")
    if document.get("id") != did:
        shown = str(document.get("id"))[:200]
        return Failed(url, "did_id_mismatch", f"the document's id is {shown!r}, not {did!r}")
    endpoints = _kos_endpoints(document.get("service"))
    if not endpoints:
        return Failed(url, "no_kos_service", f"{did} lists no {KOS_SERVICE_TYPE} service")
    return DidDocument(did, fetched.url, endpoints)


def _kos_endpoints(services: Any) -> tuple[str, ...]:
    """The http(s) base URLs of the KosNode services, in order, without repeats."""
    if not isinstance(services, list):
        return ()
    found: list[str] = []
    for service in services[:MAX_SERVICES]:
        if not isinstance(service, dict) or not _is_kos(service.get("type")):
            continue
        endpoint = service.get("serviceEndpoint")
        candidates = endpoint if isinstance(endpoint, list) else [endpoint]
        for candidate in candidates:
            if is_http_url(candidate) and candidate not in found:
                found.append(candidate)
    return tuple(found[:MAX_ENDPOINTS])


def _is_kos(kind: Any) -> bool:
    return kind == KOS_SERVICE_TYPE or (isinstance(kind, list) and KOS_SERVICE_TYPE in kind)
