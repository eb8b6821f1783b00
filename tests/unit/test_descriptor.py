"""Descriptor validation (PROTOCOL.md sections 1-2): a broken document fails the host, a
broken service entry is skipped with its reason, and the node's valid services still count."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ronin.discovery.descriptor import InvalidDescriptor, parse_descriptor

HASH = "ab" * 32


def service(**overrides: Any) -> dict[str, Any]:
    return {
        "service_id": "did:kos:service:7f3a9c:packages",
        "endpoint": "http://10.0.0.5:30437/klf",
        "capabilities": ["package_distribution", "knowledge_preservation"],
        "protocols": ["klf/1.0", "http/1.1"],
    } | overrides


def document(**overrides: Any) -> dict[str, Any]:
    return {
        "kos": "1.0",
        "node_id": "did:kos:griot:7f3a9c",
        "node_class": "Griot",
        "services": [service()],
        "peers": ["http://10.0.0.6:30437", "did:kos:tohunga:51be02"],
        "hieros_compliance": {"verified": False, "codex_hash": HASH},
    } | overrides


def parse(doc: Any) -> Any:
    return parse_descriptor(json.dumps(doc).encode())


def test_the_protocol_example_parses_whole() -> None:
    node = parse(document())
    assert (node.node_id, node.node_class, node.kos) == ("did:kos:griot:7f3a9c", "Griot", "1.0")
    [entry] = node.services
    assert entry.capabilities == ("package_distribution", "knowledge_preservation")
    assert entry.protocols == ("klf/1.0", "http/1.1")
    assert node.peers == ("http://10.0.0.6:30437", "did:kos:tohunga:51be02")
    assert node.hieros_compliance == {"verified": False, "codex_hash": HASH}
    assert node.skipped == ()


def test_optional_fields_and_unknown_keys() -> None:
    doc = document(extra={"anything": [1, 2]})
    del doc["peers"], doc["hieros_compliance"]
    node = parse(doc)
    assert (node.peers, node.hieros_compliance) == ((), None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>hello</html>", "invalid_json"),
        (b'{"kos": "1.0", "node_id": NaN}', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (json.dumps([1, 2]).encode(), "invalid_descriptor"),
        (
            json.dumps({k: v for k, v in document().items() if k != "services"}).encode(),
            "invalid_descriptor",
        ),
        (json.dumps(document(kos=1.0)).encode(), "invalid_descriptor"),
        (json.dumps(document(node_id=42)).encode(), "invalid_descriptor"),
        (json.dumps(document(node_id="griot")).encode(), "invalid_descriptor"),
        (json.dumps(document(node_id="did:kos:" + "a" * 250)).encode(), "invalid_descriptor"),
        (json.dumps(document(node_class="")).encode(), "invalid_descriptor"),
        (json.dumps(document(node_class="C" * 101)).encode(), "invalid_descriptor"),
        (json.dumps(document(node_class="Gri\u0000ot")).encode(), "invalid_descriptor"),
        (json.dumps(document(services="lots")).encode(), "invalid_descriptor"),
        (json.dumps(document(services=[service()] * 257)).encode(), "too_many_services"),
        (json.dumps(document(peers=["http://10.0.0.1/"] * 1025)).encode(), "too_many_peers"),
        (json.dumps(document(peers="http://10.0.0.1/")).encode(), "invalid_descriptor"),
        (b" " * (1024 * 1024 + 1), "too_large"),
    ],
)
def test_a_broken_document_fails_the_host(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidDescriptor) as raised:
        parse_descriptor(body)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("a string", "not_an_object"),
        (service(service_id="did:kos:service:" + "x" * 300), "bad_service_id"),
        (service(service_id="did:kos:service:\u0000"), "bad_service_id"),
        (service(service_id=None), "bad_service_id"),
        (service(endpoint="ftp://10.0.0.5/"), "bad_endpoint"),
        (service(endpoint="/relative/klf"), "bad_endpoint"),
        (service(endpoint="http://10.0.0.5:99999/"), "bad_endpoint"),
        (service(endpoint="http://" + "a" * 2048 + "/"), "bad_endpoint"),
        (service(capabilities=["ok", "not ok"]), "bad_capability"),
        (service(capabilities=["x" * 129]), "bad_capability"),
        (service(capabilities=[""]), "bad_capability"),
        (service(capabilities=["dup", "dup"]), "duplicate_capability"),
        (service(capabilities=[f"c{i}" for i in range(129)]), "bad_capabilities"),
        (service(capabilities="all"), "bad_capabilities"),
        (service(protocols=[1]), "bad_protocols"),
    ],
)
def test_a_broken_service_is_skipped_and_the_rest_count(entry: Any, why: str) -> None:
    good = service(service_id="did:kos:service:good")
    node = parse(document(services=[entry, good]))
    assert [s.service_id for s in node.services] == ["did:kos:service:good"]
    [(what, reason)] = node.skipped
    assert what == "services[0]"
    assert reason == why


def test_limits_are_inclusive() -> None:
    entry = service(
        service_id="did:kos:" + "s" * (255 - 8),
        capabilities=[f"c{i}" for i in range(128)],
        endpoint="http://h/" + "p" * (2048 - 9),
    )
    node = parse(
        document(
            node_class="C" * 100,
            services=[entry] + [service(service_id=f"did:kos:s:{i}") for i in range(255)],
        )
    )
    assert len(node.services) == 256


def test_repeated_services_and_bad_peers_are_skipped() -> None:
    node = parse(
        document(
            services=[service(), service(endpoint="http://10.9.9.9/")],
            peers=["http://10.0.0.6:30437", "gopher://x/", 7, "http://10.0.0.6:30437"],
            hieros_compliance={"verified": "yes"},
        )
    )
    assert [s.endpoint for s in node.services] == ["http://10.0.0.5:30437/klf"]
    assert node.peers == ("http://10.0.0.6:30437",)
    assert {what for what, _ in node.skipped} == {
        "services[1]",
        "peers[1]",
        "peers[2]",
        "hieros_compliance",
    }
