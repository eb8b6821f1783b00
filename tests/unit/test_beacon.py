"""Beacons serve documents in PROTOCOL.md section 2's shape, within section 1's limits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ronin.beacon import (
    DEFAULT_CAPABILITIES,
    MAX_DOCUMENT_BYTES,
    ServiceSpec,
    beacon_descriptor,
    check_capabilities,
    check_host,
    check_node_class,
    check_peer,
    demo_descriptor,
    encode_descriptor,
    load_descriptor_file,
    make_descriptor,
    node_id_of,
)
from ronin.cli import app
from ronin.discovery.descriptor import CANONICAL_CLASSES
from ronin.errors import InvalidValue

DID = re.compile(r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$")
CAPABILITY = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
ENDPOINT = re.compile(r"^(https?|wss?)://\S+$")
REQUIRED = {"kos", "node_id", "node_class", "services"}


def assert_protocol_shaped(document: dict[str, Any]) -> None:
    """Every rule of PROTOCOL.md sections 1 and 2 that a descriptor can break."""
    assert set(document) == REQUIRED | {"peers", "hieros_compliance"}
    assert document["kos"] == "1.0"
    assert DID.match(document["node_id"])
    assert len(document["node_id"]) <= 255
    node_class = document["node_class"]
    assert 1 <= len(node_class) <= 100
    assert node_class.isprintable()
    assert 1 <= len(document["services"]) <= 256
    for service in document["services"]:
        assert set(service) == {"service_id", "endpoint", "capabilities", "protocols"}
        assert DID.match(service["service_id"])
        assert len(service["service_id"]) <= 255
        assert ENDPOINT.match(service["endpoint"])
        assert len(service["endpoint"]) <= 2048
        capabilities = service["capabilities"]
        assert len(capabilities) <= 128
        assert len(set(capabilities)) == len(capabilities)
        assert all(CAPABILITY.match(capability) for capability in capabilities)
        assert all(isinstance(protocol, str) for protocol in service["protocols"])
    service_ids = [service["service_id"] for service in document["services"]]
    assert len(set(service_ids)) == len(service_ids)
    assert isinstance(document["peers"], list)
    assert len(document["peers"]) <= 1024
    hieros = document["hieros_compliance"]
    assert set(hieros) == {"verified", "codex_hash"}
    assert isinstance(hieros["verified"], bool)
    assert re.fullmatch(r"[0-9a-f]{64}", hieros["codex_hash"])
    assert len(encode_descriptor(document)) <= MAX_DOCUMENT_BYTES


def test_make_descriptor_has_exactly_the_protocol_shape() -> None:
    service = ServiceSpec(
        "did:kos:service:7f3a9c:packages",
        "http://10.0.0.5:30437/klf",
        ("package_distribution", "knowledge_preservation"),
    )
    document = make_descriptor(
        "did:kos:griot:7f3a9c",
        "Griot",
        [service],
        peers=["http://10.0.0.6:30437", "did:kos:tohunga:51be02"],
        hieros_verified=True,
    )
    assert_protocol_shaped(document)
    assert document["services"] == [
        {
            "service_id": "did:kos:service:7f3a9c:packages",
            "endpoint": "http://10.0.0.5:30437/klf",
            "capabilities": ["package_distribution", "knowledge_preservation"],
            "protocols": ["klf/1.0", "http/1.1"],
        }
    ]
    assert document["peers"] == ["http://10.0.0.6:30437", "did:kos:tohunga:51be02"]
    assert document["hieros_compliance"]["verified"] is True
    assert json.loads(encode_descriptor(document)) == document


@pytest.mark.parametrize("node_class", CANONICAL_CLASSES)
def test_demo_descriptors_follow_the_protocol_for_every_class(node_class: str) -> None:
    document = demo_descriptor("127.42.1.2", 30437, node_class)
    assert_protocol_shaped(document)
    assert document["node_class"] == node_class
    assert document["node_id"].startswith(f"did:kos:{node_class.lower()}:")
    assert document["services"][0]["capabilities"] == list(DEFAULT_CAPABILITIES)
    assert {s["endpoint"] for s in document["services"]} == {"http://127.42.1.2:30437/klf"}
    assert all(s["service_id"].startswith("did:kos:service:") for s in document["services"])


def test_demo_ids_derive_from_the_address_alone() -> None:
    assert demo_descriptor("127.42.1.2", 30437) == demo_descriptor("127.42.1.2", 30437)
    hosts = [f"127.42.{i // 256}.{i % 256}" for i in range(4096)]
    documents = [demo_descriptor(host, 30437) for host in hosts]
    node_ids = {document["node_id"] for document in documents}
    service_ids = {s["service_id"] for document in documents for s in document["services"]}
    assert len(node_ids) == 4096
    assert len(service_ids) == 2 * 4096
    assert demo_descriptor("127.0.0.1", 1)["node_id"] != demo_descriptor("127.0.0.1", 2)["node_id"]


def test_demo_descriptor_takes_capabilities_peers_and_ipv6() -> None:
    document = demo_descriptor(
        "::1", 8080, "Some Custom Class", ["a", "b/c"], peers=["did:kos:griot:1"]
    )
    assert_protocol_shaped(document)
    assert document["node_id"].startswith("did:kos:somecustomclass:")
    assert document["services"][0]["endpoint"] == "http://[::1]:8080/klf"
    assert document["services"][0]["capabilities"] == ["a", "b/c"]
    assert document["peers"] == ["did:kos:griot:1"]


def test_bytes_are_served_verbatim() -> None:
    assert encode_descriptor(b"{not json") == b"{not json"
    assert encode_descriptor({"a": [1, "\u00e9"]}) == '{"a":[1,"\u00e9"]}'.encode()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.3.3.3", "127.3.3.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("node-1.example.org.", "node-1.example.org"),
    ],
)
def test_check_host_accepts_addresses_and_names(given: str, expected: str) -> None:
    assert check_host(given) == expected


@pytest.mark.parametrize(
    "host", ["", "bad host", "127.0.0.999", "-lead.example", "a..b", "http://x", "[::1", "x" * 64]
)
def test_check_host_refuses_the_rest(host: str) -> None:
    with pytest.raises(InvalidValue, match="neither an IP address nor a host name"):
        check_host(host)


def test_flags_are_checked_against_the_protocol_limits() -> None:
    assert check_capabilities(["a", "b", "a"]) == ("a", "b")
    for bad in (["has space"], ["x" * 129], [""], [f"c{i}" for i in range(129)]):
        with pytest.raises(InvalidValue):
            check_capabilities(bad)
    assert check_node_class("Griot") == "Griot"
    for bad_class in ("", "G" * 101, "Gri\x00ot"):
        with pytest.raises(InvalidValue):
            check_node_class(bad_class)
    assert check_peer("http://10.0.0.6:30437") == "http://10.0.0.6:30437"
    assert check_peer("did:kos:tohunga:51be02") == "did:kos:tohunga:51be02"
    for bad_peer in ("10.0.0.6:30437", "ftp://x", "did:KOS:x", "did:kos:" + "x" * 250):
        with pytest.raises(InvalidValue):
            check_peer(bad_peer)


def test_descriptor_files_must_be_json(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(b'{"node_id": "did:kos:griot:file", "x": 1}\n')
    bad.write_bytes(b'{"node_id": ')
    assert load_descriptor_file(good) == good.read_bytes()
    assert beacon_descriptor(good)("127.0.0.1", 1) == good.read_bytes()
    assert node_id_of(good.read_bytes()) == "did:kos:griot:file"
    assert node_id_of(b"[1, 2]") is None
    assert node_id_of(b"\xff") is None
    with pytest.raises(InvalidValue, match="is not valid JSON"):
        load_descriptor_file(bad)
    with pytest.raises(InvalidValue, match="cannot read"):
        load_descriptor_file(tmp_path / "missing.json")


def test_a_demo_beacon_names_its_bound_port() -> None:
    make = beacon_descriptor(None, "Hakim", ["diagnostics"], ["did:kos:griot:1"])
    document = make("127.3.3.3", 40001)
    assert isinstance(document, dict)
    assert document == demo_descriptor(
        "127.3.3.3", 40001, "Hakim", ["diagnostics"], peers=["did:kos:griot:1"]
    )
    with pytest.raises(InvalidValue):
        beacon_descriptor(None, "Hakim", ["not valid"], [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "not a host"], "--host 'not a host' is neither an IP address nor a host name"),
        (["--capability", "a b"], "capability 'a b' must be"),
        (["--peer", "nowhere"], "peer 'nowhere' is neither a DID nor"),
        (["--node-class", ""], "node class '' must be 1 to 100 printable characters"),
    ],
)
def test_the_beacon_command_refuses_bad_flags_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["beacon", *args])
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_the_beacon_command_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{" + "x" * 200)
    result = CliRunner().invoke(app, ["beacon", "--descriptor", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad} is not valid JSON")
    assert result.stderr.strip().count("\n") == 0
