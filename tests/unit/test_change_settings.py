"""The change feed's settings (PROTOCOL.md section 9): retention and heartbeat, bounded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ronin.config import Settings
from ronin.errors import InvalidCursor, InvalidValue
from ronin.store.changes import ChangeFilter, format_cursor, parse_cursor


def test_changes_are_kept_a_day_and_streams_beat_every_15_s_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.changes_retention == timedelta(hours=24)
    assert settings.changes_heartbeat_s == 15.0


def test_the_environment_sets_them() -> None:
    settings = Settings.from_env(
        {"RONIN_CHANGES_RETENTION_S": "600", "RONIN_CHANGES_HEARTBEAT_S": "0.5"}
    )
    assert (settings.changes_retention, settings.changes_heartbeat_s) == (
        timedelta(minutes=10),
        0.5,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RONIN_CHANGES_RETENTION_S", "0", "greater than 0"),
        ("RONIN_CHANGES_HEARTBEAT_S", "16", "at most 15"),
        ("RONIN_CHANGES_HEARTBEAT_S", "often", "a number"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(InvalidValue, match=says) as raised:
        Settings.from_env({name: value})
    assert raised.value.field == name


def test_cursors_are_sixteen_digits_and_nothing_else_is_one() -> None:
    assert format_cursor(412) == "0000000000000412"
    assert parse_cursor("0000000000000412") == 412
    for text in ("412", "000000000000041a", "-000000000000041", "\uff10" * 16, ""):
        with pytest.raises(InvalidCursor):
            parse_cursor(text)


def test_a_class_filter_is_spelled_as_the_map_spells_classes() -> None:
    assert ChangeFilter(node_class="griot").node_class == "Griot"
    assert ChangeFilter(capabilities=("a", "a", "b")).capabilities == ("a", "b")
