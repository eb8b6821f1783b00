"""The ``ronin`` process keeps the collector off while its modules load, then freezes them.

Loading a command's modules makes tens of thousands of objects that live until the exit and
no garbage worth collecting; ``gc.freeze`` keeps them out of every later collection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ronin.cli import common
from tests.support.cli_probe import run_ronin

#: After ``ronin ARGS``: whether the collector is on, and whether anything is frozen.
COLLECTOR_STATE = """
import gc
print(gc.isenabled(), gc.get_freeze_count() > 0)
"""


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone."""
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_in_the_ronin_process_what_loaded_is_frozen_and_collection_resumes(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "FREEZE_WHAT_LOADED", True)
    gc.disable()
    common.modules_loaded()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_a_test_runner_is_left_alone(collector: None) -> None:
    frozen = gc.get_freeze_count()
    common.modules_loaded()
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize("args", [["version"], ["beacon", "--help"]], ids=" ".join)
def test_a_command_runs_with_the_collector_on(args: list[str]) -> None:
    """``ronin beacon`` serves for as long as it runs: its garbage must still be collected."""
    ran = run_ronin(args, COLLECTOR_STATE)
    assert ran.stdout.split()[-2:] == ["True", "True"], ran.stderr
