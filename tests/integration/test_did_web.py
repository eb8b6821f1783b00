"""did:web targets over real HTTPS with a test CA: the W3C method's URL forms, the document's
checks, redirects, TLS verification, and the descriptor's node_id against the DID."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import ServiceSpec, make_descriptor
from ronin.discovery.crawl import DiscoveryOptions
from ronin.discovery.did_web import document_url
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.models import ServiceFilter
from ronin.store.services import ServiceMap
from tests.integration.jobs_support import run_discovery_job
from tests.support.did_site import DidSite, TrustedCA, did_site, new_ca

POLICY = ScopePolicy(parse_networks("127.0.0.0/8,::1/128", field="RONIN_ALLOW"))


@pytest.fixture
def ca(tmp_path: Path) -> TrustedCA:
    return new_ca(tmp_path)


@pytest.fixture
async def site(ca: TrustedCA) -> AsyncIterator[DidSite]:
    async with did_site(ca) as served:
        yield served


def did_document(did: str, *endpoints: str, kind: Any = "KosNode") -> dict[str, Any]:
    return {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "service": [
            {"id": f"{did}#kos-{n}", "type": kind, "serviceEndpoint": endpoint}
            for n, endpoint in enumerate(endpoints)
        ],
    }


def descriptor(node_id: str, *names: str) -> dict[str, Any]:
    services = [
        ServiceSpec(f"did:kos:service:web-{name}", f"https://localhost/{name}", ("klf", name))
        for name in names
    ]
    return make_descriptor(node_id, "Griot", services)


async def discover(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    did: str,
    context: ssl.SSLContext | None,
) -> Job:
    options = DiscoveryOptions(
        policy=POLICY, rate=None, connect_timeout_s=1, total_timeout_s=3, ssl_context=context
    )
    params = {"target": {"type": "did", "value": did}, "protocols": ["http-api"]}
    return await run_discovery_job(db_url, pool, store, params, options)


async def node_services(service_map: ServiceMap, node_id: str) -> dict[str, dict[str, Any]]:
    page = await service_map.find(ServiceFilter(node_id=node_id))
    return {s.service_id: s.discovery_metadata for s in page.items}


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.org", "https://example.org/.well-known/did.json"),
        ("did:web:example.org%3A8443", "https://example.org:8443/.well-known/did.json"),
        ("did:web:example.org:users:alice", "https://example.org/users/alice/did.json"),
        ("did:web:example.org%3A8443:a:b", "https://example.org:8443/a/b/did.json"),
    ],
)
def test_the_document_url_follows_the_did_web_method(did: str, url: str) -> None:
    assert document_url(did) == url


async def test_a_did_web_node_is_resolved_probed_and_mapped(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    site: DidSite,
    ca: TrustedCA,
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", did_document(did, site.base))
    site.serve("/.well-known/kos-node", descriptor(did, "a", "b"))
    job = await discover(db_url, pool, store, did, ca.client_context())
    assert job.status == "completed", job.error
    services = await node_services(service_map, did)
    assert set(services) == {"did:kos:service:web-a", "did:kos:service:web-b"}
    assert {m["discovery_method"] for m in services.values()} == {"did_resolution"}
    assert job.result is not None
    assert job.result["services"]["new"] == 2


async def test_the_path_form_fetches_the_document_under_its_path(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, site: DidSite, ca: TrustedCA
) -> None:
    did = site.did("users", "alice")
    site.serve("/users/alice/did.json", did_document(did, site.base))
    site.serve("/.well-known/kos-node", descriptor(did, "alice"))
    job = await discover(db_url, pool, store, did, ca.client_context())
    assert job.status == "completed", job.error
    assert "/users/alice/did.json" in site.requests
    assert "/.well-known/did.json" not in site.requests


async def test_a_redirected_document_is_followed(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, site: DidSite, ca: TrustedCA
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", b"", status=302, Location="/moved/did.json")
    site.serve("/moved/did.json", did_document(did, site.base))
    site.serve("/.well-known/kos-node", descriptor(did, "moved"))
    job = await discover(db_url, pool, store, did, ca.client_context())
    assert job.status == "completed", job.error
    assert site.requests[:2] == ["/.well-known/did.json", "/moved/did.json"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (lambda did, base: did_document("did:web:elsewhere.example", base), "did_id_mismatch"),
        (lambda did, base: did_document(did, base, kind="LinkedDomains"), "no_kos_service"),
        (lambda did, base: {"id": did}, "no_kos_service"),
        (lambda did, base: [did], "bad_did_document"),
        (lambda did, base: b"{not json", "bad_did_document"),
    ],
)
async def test_a_document_that_breaks_the_method_fails_the_job_with_its_reason(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    site: DidSite,
    ca: TrustedCA,
    document: Any,
    reason: str,
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", document(did, site.base))
    job = await discover(db_url, pool, store, did, ca.client_context())
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "SCAN_FAILED"
    assert job.result is not None
    assert job.result["failed_probes"] == {reason: 1}
    assert "/.well-known/kos-node" not in site.requests


async def test_tls_is_verified(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, site: DidSite
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", did_document(did, site.base))
    job = await discover(db_url, pool, store, did, ssl.create_default_context())
    assert job.status == "failed"
    assert job.result is not None
    assert job.result["failed_probes"] == {"tls_error": 1}
    assert site.requests == []  # the handshake failed before any request


async def test_a_descriptor_of_another_node_is_a_mismatch_not_a_service_of_the_did(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    site: DidSite,
    ca: TrustedCA,
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", did_document(did, site.base))
    site.serve("/.well-known/kos-node", descriptor("did:kos:griot:impostor", "x"))
    job = await discover(db_url, pool, store, did, ca.client_context())
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["failed_probes"] == {"node_id_mismatch": 1}
    assert job.result["mismatches"] == [
        {
            "did": did,
            "node_id": "did:kos:griot:impostor",
            "url": f"{site.base}/.well-known/kos-node",
        }
    ]
    assert await node_services(service_map, did) == {}
    assert await node_services(service_map, "did:kos:griot:impostor") == {}


async def test_a_second_resolution_refreshes_the_node_and_lists_only_what_it_still_offers(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    site: DidSite,
    ca: TrustedCA,
) -> None:
    did = site.did()
    site.serve("/.well-known/did.json", did_document(did, site.base))
    site.serve("/.well-known/kos-node", descriptor(did, "kept", "dropped"))
    await discover(db_url, pool, store, did, ca.client_context())
    before = await service_map.get("did:kos:service:web-kept")
    site.serve("/.well-known/kos-node", descriptor(did, "kept"))
    job = await discover(db_url, pool, store, did, ca.client_context())
    after = await service_map.get("did:kos:service:web-kept")
    assert before is not None
    assert after is not None
    assert after.last_seen > before.last_seen
    found = await store.found_services(job.job_id)
    assert [item.service.service_id for item in found.items] == ["did:kos:service:web-kept"]
    assert [item.outcome for item in found.items] == ["refreshed"]
