"""The embedded server's holders' list forgets the dead, and only the dead.

``prune_holders`` on a directory laid out like the wheel's: ``.handle_pids.json`` (its list)
and ``.ronin_holders.json`` (Ronin's start marks), without a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ronin.store.embedded import HOLDERS_FILENAME, STARTS_FILENAME, prune_holders, start_mark


def write(pgdata: Path, holders: object, starts: dict[int, int] | None = None) -> None:
    (pgdata / HOLDERS_FILENAME).write_text(json.dumps(holders))
    if starts is not None:
        (pgdata / STARTS_FILENAME).write_text(json.dumps({str(k): v for k, v in starts.items()}))


def read(pgdata: Path) -> tuple[list[int], dict[str, int]]:
    starts = pgdata / STARTS_FILENAME
    return (
        json.loads((pgdata / HOLDERS_FILENAME).read_text()),
        json.loads(starts.read_text()) if starts.exists() else {},
    )


@pytest.fixture
def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def zombie_pid() -> Iterator[int]:
    """The PID of a process that has exited but that nobody has reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while start_mark(child.pid) is not None:
        time.sleep(0.01)
    yield child.pid
    child.wait()


def test_a_live_holder_is_kept_with_its_start(tmp_path: Path) -> None:
    me = os.getpid()
    mark = start_mark(me)
    assert mark is not None
    write(tmp_path, [me], {me: mark})
    prune_holders(tmp_path)
    assert read(tmp_path) == ([me], {str(me): mark})


def test_dead_and_zombie_holders_are_dropped(
    tmp_path: Path, dead_pid: int, zombie_pid: int
) -> None:
    me = os.getpid()
    write(tmp_path, [dead_pid, me, zombie_pid], {dead_pid: 1, zombie_pid: 2})
    prune_holders(tmp_path)
    assert read(tmp_path) == ([me], {})


def test_a_pid_reused_by_another_process_is_not_the_holder(tmp_path: Path) -> None:
    me = os.getpid()
    mark = start_mark(me)
    assert mark is not None
    write(tmp_path, [me], {me: mark - 1})  # the recorded holder started earlier
    prune_holders(tmp_path)
    assert read(tmp_path) == ([], {})


def test_a_live_holder_ronin_did_not_record_is_kept(tmp_path: Path) -> None:
    write(tmp_path, [os.getppid()])
    prune_holders(tmp_path)
    assert read(tmp_path) == ([os.getppid()], {})


def test_a_joining_process_is_a_holder_whatever_its_pid_recorded(tmp_path: Path) -> None:
    me = os.getpid()
    write(tmp_path, [me], {me: 1})  # a dead holder's PID, now this process's
    prune_holders(tmp_path, joining=me)
    assert read(tmp_path) == ([me], {str(me): start_mark(me)})


def test_joining_records_the_start_and_leaving_forgets_it(tmp_path: Path) -> None:
    me = os.getpid()
    write(tmp_path, [me])
    prune_holders(tmp_path, joining=me)
    assert read(tmp_path) == ([me], {str(me): start_mark(me)})
    prune_holders(tmp_path, leaving=me)
    assert read(tmp_path) == ([me], {})  # the wheel itself takes the PID off its list


def test_an_unreadable_list_is_rebuilt_from_the_live_recorded_holders(
    tmp_path: Path, dead_pid: int
) -> None:
    me = os.getpid()
    mark = start_mark(me)
    assert mark is not None
    (tmp_path / HOLDERS_FILENAME).write_text("[12, 3")  # a write cut short
    write_starts = {me: mark, dead_pid: 7}
    (tmp_path / STARTS_FILENAME).write_text(
        json.dumps({str(k): v for k, v in write_starts.items()})
    )
    prune_holders(tmp_path)
    assert read(tmp_path) == ([me], {str(me): mark})
