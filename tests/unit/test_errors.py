"""One error tree: every error Ronin raises on purpose is a class of ``ronin/errors.py``, which
says whether a job failing with it may retry and what the job stores of it."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import timedelta

import pytest

import ronin
from ronin import errors
from ronin.errors import (
    DatabaseError,
    ForbiddenTarget,
    InvalidTarget,
    InvalidValue,
    JobCancelled,
    JobTimedOut,
    RoninError,
    ScanFailed,
    TransientFailure,
)


def every_subclass(cls: type[RoninError]) -> set[type[RoninError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= every_subclass(sub)
    return found


def test_every_ronin_error_lives_in_the_tree() -> None:
    for module in pkgutil.walk_packages(ronin.__path__, "ronin."):
        if module.name != "ronin.__main__":
            importlib.import_module(module.name)
    outside = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in every_subclass(RoninError)
        if cls.__module__.startswith("ronin.") and cls.__module__ != errors.__name__
    }
    assert outside == set()


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (InvalidTarget("bad"), True),
        (ForbiddenTarget("out of scope"), True),
        (ScanFailed("nothing there"), True),
        (JobTimedOut(timedelta(hours=2)), True),
        (InvalidValue("bad"), False),
        (DatabaseError("down"), False),
        (TransientFailure("flaky"), False),
    ],
)
def test_the_class_says_whether_a_failure_is_permanent(error: RoninError, permanent: bool) -> None:
    assert error.permanent is permanent


@pytest.mark.parametrize(
    ("error", "payload"),
    [
        (ScanFailed.gave_up(5), {"code": "SCAN_FAILED", "message": "gave up after 5 attempts"}),
        (
            ScanFailed.gave_up(2, "boom"),
            {"code": "SCAN_FAILED", "message": "gave up after 2 attempts: boom"},
        ),
        (
            JobTimedOut(timedelta(seconds=3)),
            {"code": "TIMEOUT", "message": "the job ran longer than 0:00:03"},
        ),
        (JobCancelled(), {"code": "CANCELLED", "message": "cancelled by an operator"}),
        (
            InvalidTarget("no such port", field="ports"),
            {"code": "INVALID_TARGET", "message": "no such port"},
        ),
    ],
)
def test_a_job_error_payload_comes_from_the_class(
    error: RoninError, payload: dict[str, str]
) -> None:
    assert error.to_payload() == payload


def test_an_unexpected_exception_becomes_a_transient_failure() -> None:
    failure = TransientFailure.of(OSError("reset"))
    assert failure.to_payload() == {"code": "TRANSIENT", "message": "OSError('reset')"}
    scan = ScanFailed("x")
    assert TransientFailure.of(scan) is scan
