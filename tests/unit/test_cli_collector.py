"""The ``ronin`` process keeps the collector off while its modules load, then freezes them.

Loading a command's modules makes tens of thousands of objects that live until the exit and
no garbage worth collecting; ``gc.freeze`` keeps them out of every later collection.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ronin.cli import common

ROOT = Path(__file__).parents[2]
#: Runs ``ronin ARGS`` through ``main``, then prints whether the collector is on.
PROBE = """
import gc, sys
from ronin.cli import main
sys.argv = ["ronin", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
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
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.stdout.split()[-2:] == ["True", "True"], ran.stderr
