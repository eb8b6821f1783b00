"""The ``ronin`` command's finish, as an operator meets it: help, tables, ids, Ctrl-C, logs."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ronin import __version__
from tests.acceptance.serve_support import served_node
from tests.acceptance.test_cli import TIMEOUT_S, ronin

ROOT = Path(__file__).parents[2]
#: What Rich needs to draw a table as on an 80-column terminal, without one.
TERMINAL_80 = {"TTY_COMPATIBLE": "1", "COLUMNS": "80"}
LONG_DID = "did:kos:tohunga:7f3a9c0b1d2e3f405162738495a6b7c8d9e0f1a2"
SLOW_SWEEP = ("127.77.0.0/16", "--rate", "5")


def environment(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RONIN_", "PG"))}
    return clean | env


def plain(text: str) -> str:
    """Terminal output without its styles."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def insert_job(db_url: str, job_id: str, value: str = "127.9.0.0/24") -> None:
    params = {"target": {"type": "network_cidr", "value": value}, "protocols": ["http-api"]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO discovery_jobs (job_id, status, params) VALUES (%s, 'pending', %s)",
            (job_id, Jsonb(params)),
        )


def newest_job(db_url: str) -> str:
    listed = ronin("jobs", "list", "--json", RONIN_DATABASE_URL=db_url)
    return str(json.loads(listed.stdout)["items"][0]["job_id"])


def job_status(db_url: str, job_id: str) -> str:
    shown = ronin("jobs", "show", job_id, "--json", RONIN_DATABASE_URL=db_url)
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["job"]["status"])


# Help and version


def test_version_is_an_option_too() -> None:
    for args in (("--version",), ("version",)):
        done = ronin(*args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == __version__


def test_help_shows_flags_as_flags_and_says_the_defaults() -> None:
    done = ronin("discover", "--help", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout
    assert "{target}" not in done.stdout
    assert "[OPTIONS] TARGET" in done.stdout
    assert "default 30437" in done.stdout  # --port
    assert "default http-api" in done.stdout  # --protocol
    assert "default 1,000, so a /16 takes over a minute" in done.stdout  # --rate
    assert "default 256" in done.stdout  # --concurrency
    top = ronin("--help", COLUMNS="200")
    assert "<bool>" not in top.stdout
    assert "--version" in top.stdout


def test_schedules_take_the_pacing_options_of_discover(db_url: str) -> None:
    helped = ronin("schedules", "add", "--help", COLUMNS="200")
    for option in ("--rate", "--concurrency", "--mdns-window", "over a minute"):
        assert option in helped.stdout
    added = ronin(
        *("schedules", "add", "slow", "127.9.0.0/24", "--rate", "50"),
        *("--concurrency", "8", "--mdns-window", "2"),
        RONIN_DATABASE_URL=db_url,
    )
    assert added.returncode == 0, added.stderr
    listed = json.loads(ronin("schedules", "list", "--json", RONIN_DATABASE_URL=db_url).stdout)
    params = listed[0]["params"]
    assert (params["rate"], params["concurrency"], params["mdns_window_s"]) == (50, 8, 2)


# Tables and ids


def test_tables_keep_ids_whole_on_80_columns(db_url: str) -> None:
    job_id = str(uuid.uuid4())
    insert_job(db_url, job_id, LONG_DID)
    listed = ronin("jobs", "list", RONIN_DATABASE_URL=db_url, **TERMINAL_80)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout
    assert "…" not in listed.stdout
    assert all(len(line) <= 80 for line in plain(listed.stdout).splitlines())
    # A long DID is folded onto more lines, never cut short.
    header, *rows = plain(listed.stdout).splitlines()
    start, end = header.index("target"), header.index("created")
    assert "".join(row[start:end].strip() for row in rows[1:]) == LONG_DID

    ronin("schedules", "add", "nightly", "127.9.0.0/24", RONIN_DATABASE_URL=db_url)
    schedules = ronin("schedules", "list", RONIN_DATABASE_URL=db_url, **TERMINAL_80)
    schedule_id = json.loads(
        ronin("schedules", "list", "--json", RONIN_DATABASE_URL=db_url).stdout
    )[0]["schedule_id"]
    assert schedule_id in schedules.stdout
    assert "…" not in schedules.stdout


def test_an_empty_schedule_list_says_so(db_url: str) -> None:
    shown = ronin("schedules", "list", RONIN_DATABASE_URL=db_url, **TERMINAL_80)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "no schedules"
    as_json = ronin("schedules", "list", "--json", RONIN_DATABASE_URL=db_url, **TERMINAL_80)
    assert json.loads(as_json.stdout) == []


def test_a_unique_prefix_of_a_job_id_names_the_job(db_url: str) -> None:
    env = {"RONIN_DATABASE_URL": db_url}
    first, second = "abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"
    alone = "abce1234-0000-4000-8000-000000000003"
    for job_id in (first, second, alone):
        insert_job(db_url, job_id)

    shown = ronin("jobs", "show", "ABCE", "--json", **env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["job"]["job_id"] == alone
    whole = ronin("jobs", "show", second.upper(), "--json", **env)
    assert json.loads(whole.stdout)["job"]["job_id"] == second

    ambiguous = ronin("jobs", "show", "abcd", **env)
    assert ambiguous.returncode == 1
    assert first in ambiguous.stderr
    assert second in ambiguous.stderr
    unknown = ronin("jobs", "show", "abcf", **env)
    assert unknown.returncode == 1
    assert "no job id starts with abcf" in unknown.stderr
    too_short = ronin("jobs", "show", "abc", **env)
    assert too_short.returncode == 1
    assert "at least 4 hex digits" in too_short.stderr

    cancelled = ronin("jobs", "cancel", "abce12", **env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {alone}: cancelled" in cancelled.stdout
    again = ronin("jobs", "cancel", "abce12", **env)
    assert again.returncode == 1
    assert f"job {alone} has already ended (failed)" in again.stderr
    followed = ronin("jobs", "follow", "abce", **env)
    assert followed.returncode == 1
    assert "CANCELLED" in followed.stdout


def test_a_failed_job_says_why_once(db_url: str) -> None:
    done = ronin("discover", "did:kos:nobody:abc", "--wait", RONIN_DATABASE_URL=db_url)
    assert done.returncode == 1
    reason = "know did:kos:nobody:abc"
    assert (done.stdout + done.stderr).count(reason) == 1, done.stdout + done.stderr
    assert "hosts probed" not in done.stdout  # nothing was probed: no table of zeros


# Logs


def test_serve_logs_each_job_and_on_request_each_request(tmp_path: Path, db_url: str) -> None:
    executor = ("--executor", "tests.support.executors:run")
    with served_node(tmp_path, db_url, "--access-log", *executor) as node:
        env = {"RONIN_URL": node.url}
        done = ronin("discover", "did:kos:test:noop", "--wait", "--json", **env)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job_id"]
        failed = ronin("discover", "did:kos:test:permanent", "--wait", "--json", **env)
        failed_id = json.loads(failed.stdout)["job_id"]
        # Through RONIN_URL too, the start of an id is enough.
        shown = ronin("jobs", "show", job_id[:8], "--json", **env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["job"]["job_id"] == job_id
        unknown = ronin("jobs", "show", "0000ffff", **env)
        assert "no job id starts with 0000ffff" in unknown.stderr
        assert node.stop() == 0
    log = node.log()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ronin\.jobs\.worker: "
    assert re.search(stamp + f"job {job_id} \\(did:kos:test:noop\\) started", log, re.M), log
    assert re.search(stamp + f"job {job_id} .*ended completed after [0-9.]+s$", log, re.M), log
    assert re.search(f"job {failed_id} .*ended failed \\(SCAN_FAILED: ", log), log
    assert re.search(r'INFO uvicorn\.access: .*"POST /v1/jobs HTTP/1\.1" 202', log), log


def test_a_worker_logs_each_job_without_verbose(tmp_path: Path, db_url: str) -> None:
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ronin", "worker", "--executor", "tests.support.executors:run"],
            cwd=ROOT,
            env=environment(RONIN_DATABASE_URL=db_url, RONIN_POLL_INTERVAL_S="0.2"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        queued = ronin("discover", "did:kos:test:noop", "--json", RONIN_DATABASE_URL=db_url)
        job_id = json.loads(queued.stdout)["job_id"]
        deadline = time.monotonic() + TIMEOUT_S
        while job_status(db_url, job_id) != "completed" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=TIMEOUT_S)
    text = log_path.read_text()
    assert f"job {job_id} (did:kos:test:noop) started: attempt 1 of" in text, text
    assert f"job {job_id} (did:kos:test:noop) ended completed after" in text, text


# Ctrl-C on discover --wait


def start_sweep(db_url: str, **streams: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ronin", "discover", *SLOW_SWEEP, "--wait"],
        cwd=ROOT,
        env=environment(RONIN_DATABASE_URL=db_url),
        **streams,  # type: ignore[arg-type]
    )


def test_ctrl_c_without_a_terminal_says_where_the_job_went(db_url: str) -> None:
    sweep = start_sweep(
        db_url, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert sweep.stdout is not None
    try:
        line = b""
        while not line.startswith(b"running"):  # "pending" comes first until the claim
            line = sweep.stdout.readline()
            assert line, "discover --wait ended before its job ran"
        sweep.send_signal(signal.SIGINT)
        _, stderr = sweep.communicate(timeout=TIMEOUT_S)
    finally:  # killed, its pipes read and closed, whatever an assertion said
        if sweep.poll() is None:
            sweep.kill()
        sweep.communicate()
    assert sweep.returncode == 1
    job_id = newest_job(db_url)
    expected = (
        f"the job {job_id} was handed back to the queue and will run when a worker starts; "
        f"`ronin jobs cancel {job_id}` cancels it"
    )
    assert expected in " ".join(stderr.decode().split()), stderr
    assert job_status(db_url, job_id) == "pending"


class Terminal:
    """A pseudo-terminal a command runs on, as if an operator typed into it."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.seen = b""

    def read_until(self, text: bytes, timeout_s: float = TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout_s
        while text not in self.seen:
            assert time.monotonic() < deadline, self.seen.decode(errors="replace")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the command exited and closed its end
                    break
        return self.seen

    def read_to_the_end(self, timeout_s: float = TIMEOUT_S) -> bytes:
        """Everything until the command closes its end."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.seen += chunk
        return self.seen

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> None:
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    opened = Terminal()
    yield opened
    opened.close()


@pytest.mark.parametrize(("answer", "status"), [(b"n\n", "pending"), (b"\n", "failed")])
def test_ctrl_c_on_a_terminal_asks_whether_to_cancel(
    db_url: str, terminal: Terminal, answer: bytes, status: str
) -> None:
    slave = terminal.slave
    sweep = start_sweep(db_url, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        terminal.read_until(b"running")
        sweep.send_signal(signal.SIGINT)
        terminal.read_until(b"[Y/n]")
        terminal.type(answer)
        assert sweep.wait(timeout=TIMEOUT_S) == 1
        seen = " ".join(plain(terminal.read_to_the_end().decode(errors="replace")).split())
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    job_id = newest_job(db_url)
    assert "ETA" in seen  # the progress bar says when the sweep should end
    assert f"Cancel job {job_id}? [Y/n]" in seen
    assert job_status(db_url, job_id) == status
    if status == "pending":
        assert "was handed back to the queue and will run when a worker starts" in seen
    else:
        assert "CANCELLED: cancelled by an operator" in seen
