"""The live map's settings (PROTOCOL.md section 8): their defaults, and bad values named."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ronin.config import Settings
from ronin.errors import InvalidValue


def test_the_defaults_are_the_protocols() -> None:
    settings = Settings.from_env({})
    assert settings.verify_interval_s == 60.0
    assert settings.verify_guard_fraction == 0.3
    assert settings.gone_retention == timedelta(days=7)


def test_the_environment_overrides_them_and_0_turns_verification_off() -> None:
    settings = Settings.from_env(
        {
            "RONIN_VERIFY_INTERVAL_S": "0",
            "RONIN_VERIFY_GUARD_FRACTION": "0.5",
            "RONIN_GONE_RETENTION_S": "3600",
        }
    )
    assert settings.verify_interval_s == 0.0
    assert settings.verify_guard_fraction == 0.5
    assert settings.gone_retention == timedelta(hours=1)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RONIN_VERIFY_INTERVAL_S", "-1", "at least 0"),
        ("RONIN_VERIFY_INTERVAL_S", "soon", "a number"),
        ("RONIN_VERIFY_INTERVAL_S", "inf", "finite"),
        ("RONIN_VERIFY_GUARD_FRACTION", "0", "greater than 0"),
        ("RONIN_VERIFY_GUARD_FRACTION", "1", "between 0 and 1"),
        ("RONIN_VERIFY_GUARD_FRACTION", "30%", "a number"),
        ("RONIN_VERIFY_GUARD_FRACTION", "nan", "greater than 0"),
        ("RONIN_GONE_RETENTION_S", "0", "greater than 0"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(InvalidValue, match=says) as raised:
        Settings.from_env({name: value})
    assert raised.value.field == name
    assert name in raised.value.message


@pytest.mark.parametrize(("interval", "idle"), [("60", 1.0), ("10", 0.5), ("1", 0.05)])
def test_an_idle_verifier_looks_again_well_before_a_retry_is_due(
    interval: str, idle: float
) -> None:
    """A failed check is retried after a fifth of the interval: an idle pause of a full second
    would be the whole of that delay at a 1 s interval (the benchmark's death-to-gone MISS)."""
    from ronin.jobs.verifying import verifier_options

    settings = Settings.from_env({"RONIN_VERIFY_INTERVAL_S": interval})
    assert verifier_options(settings).idle_s == pytest.approx(idle)
