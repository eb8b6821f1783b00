"""Settings come from RONIN_* with named defaults, and bad values are named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ronin.config import DEFAULT_FRESHNESS_WINDOW, Settings
from ronin.durations import parse_duration
from ronin.errors import InvalidValue


def test_defaults_use_the_embedded_database() -> None:
    settings = Settings.from_env({})
    assert settings.embedded
    assert settings.freshness_window == DEFAULT_FRESHNESS_WINDOW
    assert settings.data_dir.name == "ronin"


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "RONIN_DATABASE_URL": "postgresql://db.internal/ronin",
            "RONIN_DATA_DIR": "/srv/ronin",
            "RONIN_FRESHNESS_WINDOW_S": "600",
            "RONIN_POOL_MAX_SIZE": "4",
        }
    )
    assert not settings.embedded
    assert settings.data_dir == Path("/srv/ronin")
    assert settings.freshness_window == timedelta(minutes=10)
    assert settings.pool_max_size == 4


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ronin:secret@db.internal:5433/ronin",
        "postgres://db.internal/ronin?sslmode=require",
        "postgresql:///ronin?host=/run/postgresql",
        "host=db.internal port=5433 dbname=ronin",
    ],
)
def test_a_database_url_is_a_postgresql_url_or_conninfo(url: str) -> None:
    assert Settings.from_env({"RONIN_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    "url",
    ["garbage", "   ", "http://db.internal/ronin", "postgresql://db/x?bogus=1", "hots=db.internal"],
)
def test_a_bad_database_url_is_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(
        InvalidValue, match="RONIN_DATABASE_URL must be a postgresql:// URL"
    ) as raised:
        Settings.from_env({"RONIN_DATABASE_URL": url})
    assert raised.value.field == "RONIN_DATABASE_URL"
    assert "key=value" in raised.value.message
    assert "\n" not in raised.value.message


@pytest.mark.parametrize("value", ["ten", "0", "-5", "nan"])
def test_a_bad_number_names_its_variable(value: str) -> None:
    with pytest.raises(InvalidValue, match="RONIN_FRESHNESS_WINDOW_S") as raised:
        Settings.from_env({"RONIN_FRESHNESS_WINDOW_S": value})
    assert raised.value.field == "RONIN_FRESHNESS_WINDOW_S"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1.5h", timedelta(hours=1.5)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0", "7 days", "-1h", "h", "99999999999999d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_duration(text, field="--not-seen-for")


def test_api_tokens_carry_their_scope_and_never_print_their_secret() -> None:
    settings = Settings.from_env(
        {"RONIN_API_TOKENS": "read:reader-secret-0123, write:writer-secret-0123"}
    )
    assert [(t.scope, t.token) for t in settings.api_tokens] == [
        ("read", "reader-secret-0123"),
        ("write", "writer-secret-0123"),
    ]
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    "tokens", ["admin:abcdefghijklmnopq", "read:short", "abcdefghijklmnopq", "read:spaces in token"]
)
def test_a_malformed_or_weak_token_is_refused(tokens: str) -> None:
    with pytest.raises(InvalidValue, match="RONIN_API_TOKENS"):
        Settings.from_env({"RONIN_API_TOKENS": tokens})


def test_the_node_id_is_a_did_stable_on_this_machine() -> None:
    assert Settings.from_env({}).node_id == Settings.from_env({}).node_id
    assert Settings.from_env({}).node_id.startswith("did:kos:ronin:")
    assert Settings.from_env({"RONIN_NODE_ID": "did:kos:ronin:scout-1"}).node_id == (
        "did:kos:ronin:scout-1"
    )
    with pytest.raises(InvalidValue, match="RONIN_NODE_ID"):
        Settings.from_env({"RONIN_NODE_ID": "ronin-1"})


def test_peers_are_base_urls_with_an_optional_token() -> None:
    settings = Settings.from_env(
        {"RONIN_PEERS": "http://127.0.0.1:30437/ secret-token-0123456789, https://b.example:8443"}
    )
    assert [(p.url, p.token) for p in settings.peers] == [
        ("http://127.0.0.1:30437", "secret-token-0123456789"),
        ("https://b.example:8443", None),
    ]
    assert "secret" not in repr(settings)
    with pytest.raises(InvalidValue, match="RONIN_PEERS"):
        Settings.from_env({"RONIN_PEERS": "ronin-b:30437"})


def test_a_ca_bundle_must_be_a_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env({"RONIN_CA_BUNDLE": str(bundle)}).ca_bundle == bundle
    with pytest.raises(InvalidValue, match="RONIN_CA_BUNDLE"):
        Settings.from_env({"RONIN_CA_BUNDLE": str(tmp_path / "missing.pem")})
