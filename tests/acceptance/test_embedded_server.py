"""The embedded server stops when its last live holder leaves, however the holders end.

Real ``ronin`` processes on a private data directory: ``ronin jobs follow`` on a pending job
holds the server for as long as it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import psutil
import pytest

from tests.acceptance.serve_support import Process, environment, ronin_process

TIMEOUT_S = 120
WAIT_S = 30
_FOLLOWING = re.compile(r"pending\s+0%")


@pytest.fixture(autouse=True)
def _no_server_left(data_dir: Path) -> Iterator[None]:
    """A failed test must not leave its server running: stop it by its own PID."""
    yield
    with contextlib.suppress(OSError, ValueError):
        os.kill(server_pid(data_dir), signal.SIGINT)  # a fast shutdown


def ronin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ronin", *args],
        env=environment(RONIN_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def pending_job(data_dir: Path) -> str:
    """A job no worker will take: nothing runs ``ronin worker`` here."""
    queued = ronin(data_dir, "discover", "127.7.0.0/30", "--json")
    assert queued.returncode == 0, queued.stderr
    job_id: str = json.loads(queued.stdout)["job_id"]
    return job_id


def holders(data_dir: Path) -> list[int]:
    path = data_dir / "pgdata" / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def stopped(data_dir: Path, pid: int) -> Callable[[], bool]:
    """The server that ran as ``pid`` has exited and removed its postmaster.pid."""

    def check() -> bool:
        gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        return gone and not (data_dir / "pgdata" / "postmaster.pid").exists()

    return check


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def follow(data_dir: Path, job_id: str, name: str) -> AbstractContextManager[Process]:
    """``ronin jobs follow JOB``, once it holds the server and shows the job."""
    return ronin_process(
        data_dir / f"{name}.log", _FOLLOWING, "jobs", "follow", job_id, RONIN_DATA_DIR=str(data_dir)
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_holder_releases_and_stops_the_server(data_dir: Path, signum: int) -> None:
    job_id = pending_job(data_dir)
    with follow(data_dir, job_id, "follower") as follower:
        assert holders(data_dir) == [follower.popen.pid]
        pid = server_pid(data_dir)
        code = follower.stop(signum)
    assert code > 0, f"ended by the signal itself ({code}), skipping its release"
    if signum != signal.SIGINT:
        assert code == 128 + signum
    assert wait_until(stopped(data_dir, pid)), f"still running; holders {holders(data_dir)}"
    assert holders(data_dir) == []


def test_a_holder_killed_outright_does_not_pin_the_server(data_dir: Path) -> None:
    job_id = pending_job(data_dir)
    with follow(data_dir, job_id, "follower") as follower:
        pid = server_pid(data_dir)
        follower.popen.kill()
        follower.popen.wait()
    assert holders(data_dir) == [follower.popen.pid]  # what SIGKILL leaves behind

    done = ronin(data_dir, "map", "summary")
    assert done.returncode == 0, done.stderr
    assert wait_until(stopped(data_dir, pid)), f"still running; holders {holders(data_dir)}"
    assert follower.popen.pid not in holders(data_dir)


def test_the_server_outlives_every_holder_but_the_last(data_dir: Path) -> None:
    first_job, second_job = pending_job(data_dir), pending_job(data_dir)
    with (
        follow(data_dir, first_job, "first") as first,
        follow(data_dir, second_job, "second") as second,
    ):
        assert sorted(holders(data_dir)) == sorted([first.popen.pid, second.popen.pid])
        pid = server_pid(data_dir)

        assert ronin(data_dir, "jobs", "cancel", first_job).returncode == 0
        assert first.popen.wait(timeout=TIMEOUT_S) == 1  # a cancelled job: follow exits 1
        assert holders(data_dir) == [second.popen.pid]
        assert server_pid(data_dir) == pid
        assert not stopped(data_dir, pid)()

        shown = ronin(data_dir, "jobs", "show", second_job, "--json")  # joins and leaves
        assert shown.returncode == 0, shown.stderr
        assert holders(data_dir) == [second.popen.pid]
        assert not stopped(data_dir, pid)()

        assert ronin(data_dir, "jobs", "cancel", second_job).returncode == 0
        assert second.popen.wait(timeout=TIMEOUT_S) == 1
        _check_ended_normally(second)
    assert wait_until(stopped(data_dir, pid)), f"still running; holders {holders(data_dir)}"
    assert holders(data_dir) == []


def _check_ended_normally(process: Process) -> None:
    assert "failed" in process.log(), process.log()
    assert "Traceback" not in process.log(), process.log()


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """The server processes running on ``data_dir``'s cluster."""
    pgdata = str((data_dir / "pgdata").resolve())
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if process.info["status"] != psutil.STATUS_ZOMBIE and pgdata in " ".join(
                process.info["cmdline"] or ()
            ):
                found.append(process)
    return found


def test_the_last_holder_exits_only_once_the_server_is_gone(data_dir: Path) -> None:
    """The stop does not poll at pg_ctl's pace, but it still waits for the server."""
    for _ in range(3):
        done = ronin(data_dir, "map", "summary")
        assert done.returncode == 0, done.stderr
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # at once: no wait_until
        assert postgres_processes(data_dir) == []
        assert holders(data_dir) == []


@pytest.mark.parametrize(
    ("args", "code"),
    [(["jobs", "list", "--no-such-option"], 2), (["discover", "not a target", "--wait"], 1)],
    ids=["usage error", "refused target"],
)
def test_a_command_refused_as_it_starts_leaves_no_server(
    data_dir: Path, args: list[str], code: int
) -> None:
    """The server it started while loading (``ronin.cli.head_start``) is stopped at its exit."""
    assert ronin(data_dir, "map", "summary").returncode == 0  # the cluster exists
    refused = ronin(data_dir, *args)
    assert refused.returncode == code, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert postgres_processes(data_dir) == []
    assert holders(data_dir) == []


def test_a_first_command_asking_for_help_makes_no_cluster(data_dir: Path) -> None:
    shown = ronin(data_dir, "discover", "--help")
    assert shown.returncode == 0
    assert not (data_dir / "pgdata").exists()
    mistyped = ronin(data_dir, "services", "--no-such-option")  # nor does a typo
    assert mistyped.returncode == 2
    assert not (data_dir / "pgdata" / "PG_VERSION").exists()
