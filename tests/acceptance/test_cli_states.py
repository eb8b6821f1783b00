"""``ronin services --state`` and ``ronin map summary`` as an operator meets them: gone
services hidden unless asked for, on the database and through a remote node alike."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.acceptance.serve_support import served_node
from tests.acceptance.test_cli import ronin
from tests.acceptance.test_cli_operator import TERMINAL_80, plain

STATES = {"001": "alive", "002": "gone", "003": "suspect", "004": "unverified", "005": "gone"}
# Verification off, so no check changes the states this test wrote.
QUIET = {"RONIN_VERIFY_INTERVAL_S": "0"}


@pytest.fixture
def states_db(db_url: str) -> str:
    """A map of five services, one a state each (two gone), written as SQL."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for number, state in STATES.items():
            service_id = f"did:kos:service:{number}"
            conn.execute(
                "INSERT INTO discovered_services (service_id, node_id, node_class, endpoint,"
                " capabilities, discovery_metadata, last_seen)"
                " VALUES (%s, %s, 'Griot', 'http://127.0.0.1:1/klf', %s, '{}', now())",
                (service_id, f"did:kos:node:{number}", Jsonb(["klf"])),
            )
            conn.execute(
                "UPDATE service_liveness SET state = %s WHERE service_id = %s", (state, service_id)
            )
    return db_url


def listed(*args: str, **env: str) -> list[tuple[str, str]]:
    done = ronin("services", "--json", *args, **QUIET, **env)
    assert done.returncode == 0, done.stderr
    return [(s["service_id"][-3:], s["state"]) for s in json.loads(done.stdout)["items"]]


def test_services_hide_gone_ones_unless_a_state_asks(states_db: str) -> None:
    assert listed(RONIN_DATABASE_URL=states_db) == [
        ("001", "alive"),
        ("003", "suspect"),
        ("004", "unverified"),
    ]
    assert listed("--state", "gone", RONIN_DATABASE_URL=states_db) == [
        ("002", "gone"),
        ("005", "gone"),
    ]
    both = listed("--state", "gone", "--state", "suspect", RONIN_DATABASE_URL=states_db)
    assert both == [("002", "gone"), ("003", "suspect"), ("005", "gone")]


def test_a_state_outside_the_four_is_a_usage_error(states_db: str) -> None:
    refused = ronin("services", "--state", "dead", RONIN_DATABASE_URL=states_db)
    assert refused.returncode == 2
    assert "dead" in plain(refused.stderr)


def test_the_services_table_shows_each_state(states_db: str) -> None:
    shown = ronin(
        "services",
        "--state",
        "gone",
        "--state",
        "alive",
        RONIN_DATABASE_URL=states_db,
        **TERMINAL_80,
    )
    assert shown.returncode == 0, shown.stderr
    text = plain(shown.stdout)
    header = next(line for line in text.splitlines() if "service" in line)
    assert "state" in header
    assert text.count("gone") == 2
    assert "alive" in text


def test_the_map_summary_counts_services_by_state(states_db: str) -> None:
    done = ronin("map", "summary", "--json", RONIN_DATABASE_URL=states_db)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["states"] == {"alive": 1, "suspect": 1, "gone": 2, "unverified": 1}
    assert summary["services"] == 5
    table = ronin("map", "summary", RONIN_DATABASE_URL=states_db, **TERMINAL_80)
    assert "unverified" in plain(table.stdout)


def test_a_remote_node_is_asked_for_the_same_states(tmp_path: Path, states_db: str) -> None:
    with served_node(tmp_path, states_db, "--workers", "0", **QUIET) as node:
        assert listed("--state", "gone", RONIN_URL=node.url) == [("002", "gone"), ("005", "gone")]
        assert [n for n, _ in listed(RONIN_URL=node.url)] == ["001", "003", "004"]
        assert node.stop() == 0
