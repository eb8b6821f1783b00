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


@pytest.mark.parametrize("text", ["", "0", "7 days", "-1h", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_duration(text, field="--not-seen-for")
