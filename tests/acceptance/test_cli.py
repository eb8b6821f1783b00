"""The ``ronin`` command as a newcomer and an operator run it: real processes, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

TIMEOUT_S = 120


def ronin(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RONIN_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "ronin", *args],
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def postgres_running_in(pgdata: Path) -> bool:
    for process in psutil.process_iter(attrs=["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            return True
    return False


def wait_until(condition: object, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_first_command_on_a_new_machine_just_works(data_dir: Path) -> None:
    done = ronin("map", "summary", "--json", RONIN_DATA_DIR=str(data_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "services": 0,
        "nodes": 0,
        "classes": [],
        "states": {"alive": 0, "suspect": 0, "gone": 0, "unverified": 0},
    }
    pgdata = data_dir / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    assert wait_until(lambda: not postgres_running_in(pgdata.resolve()))


def test_a_running_embedded_server_is_shared_not_restarted(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from ronin.store.embedded import start_embedded;"
            "print(start_embedded(Path(sys.argv[1])), flush=True); sys.stdin.read()",
            str(data_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "host=" in holder.stdout.readline()
        pgdata = (data_dir / "pgdata").resolve()
        pid_before = (pgdata / "postmaster.pid").read_text().split()[0]
        done = ronin("map", "summary", "--json", RONIN_DATA_DIR=str(data_dir))
        assert done.returncode == 0, done.stderr
        # The holder still uses it: the command joined the server and left it running.
        assert (pgdata / "postmaster.pid").read_text().split()[0] == pid_before
        assert postgres_running_in(pgdata)
    finally:
        holder.communicate(input="", timeout=TIMEOUT_S)
    assert wait_until(lambda: not postgres_running_in(pgdata))


def test_an_external_database_is_migrated_only_on_request(fresh_database: str) -> None:
    refused = ronin("map", "summary", RONIN_DATABASE_URL=fresh_database)
    assert refused.returncode == 1
    assert "out of date" in refused.stderr
    assert "ronin db migrate" in refused.stderr
    assert "Traceback" not in refused.stderr

    migrated = ronin("db", "migrate", RONIN_DATABASE_URL=fresh_database)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_seed_schema" in migrated.stdout

    again = ronin("db", "migrate", RONIN_DATABASE_URL=fresh_database)
    assert again.stdout.strip() == "schema is up to date"
    status = ronin("db", "status", RONIN_DATABASE_URL=fresh_database)
    assert "0002_map_support: applied" in status.stdout
    summary = ronin("map", "summary", "--json", RONIN_DATABASE_URL=fresh_database)
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["services"] == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("map", "prune", "--not-seen-for", "soon"), {}, "--not-seen-for must look like"),
        (("map", "summary"), {"RONIN_FRESHNESS_WINDOW_S": "x"}, "RONIN_FRESHNESS_WINDOW_S"),
        (
            ("map", "summary"),
            {"RONIN_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"},
            "Could not connect to PostgreSQL",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = ronin(*args, **env)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage", "RONIN_DATABASE_URL must be a postgresql:// URL"),
        (
            "postgresql://nobody:secret@127.0.0.1:1/x?connect_timeout=2",
            "Could not connect to PostgreSQL at 127.0.0.1:1 (RONIN_DATABASE_URL)",
        ),
    ],
)
def test_a_bad_database_url_gets_one_line_naming_the_setting(url: str, message: str) -> None:
    done = ronin("map", "summary", RONIN_DATABASE_URL=url)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert message in done.stderr
    assert "secret" not in done.stderr


def test_an_unreachable_remote_node_gets_one_line_naming_ronin_url() -> None:
    done = ronin("jobs", "list", RONIN_URL="http://127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: Could not reach the node at http://127.0.0.1:1")
    assert "(RONIN_URL)" in done.stderr
    assert "Traceback" not in done.stderr


def test_discover_wait_runs_the_job_here_and_says_how_it_went(data_dir: Path) -> None:
    from tests.support.fleet import free_port

    port = free_port("127.8.0.1")
    beacon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ronin",
            "beacon",
            "--host",
            "127.8.0.1",
            "--port",
            str(port),
            "--node-class",
            "Tohunga",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert beacon.stdout is not None
        assert "serving" in beacon.stdout.readline()
        env = {"RONIN_DATA_DIR": str(data_dir)}
        done = ronin("discover", "127.8.0.0/29", "--port", str(port), "--wait", "--json", **env)
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)
        assert job["status"] == "completed"
        assert job["result"]["services"] == {"new": 2, "refreshed": 0}
        assert job["result"]["stats"]["nodes"] == 1
        shown = ronin("discover", "127.8.0.0/29", "--port", str(port), "--wait", **env)
        assert shown.returncode == 0, shown.stderr
        assert "completed" in shown.stdout
        assert "services refreshed" in shown.stdout
    finally:
        beacon.terminate()
        assert beacon.wait(timeout=30) == 0
        if beacon.stdout is not None:
            beacon.stdout.close()
    summary = json.loads(ronin("map", "summary", "--json", **env).stdout)
    assert summary["classes"][0]["node_class"] == "Tohunga"


def test_discover_refuses_a_target_outside_the_scope(data_dir: Path) -> None:
    done = ronin("discover", "8.8.8.0/24", "--wait", RONIN_DATA_DIR=str(data_dir))
    assert done.returncode == 1
    assert "outside the networks this Ronin may probe" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_operator_lists_shows_and_cancels_jobs(data_dir: Path) -> None:
    env = {"RONIN_DATA_DIR": str(data_dir)}
    queued = ronin("discover", "127.9.0.0/24", "--json", **env)
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job_id"]

    listed = json.loads(ronin("jobs", "list", "--json", **env).stdout)
    assert [job["job_id"] for job in listed["items"]] == [job_id]
    assert listed["items"][0]["status"] == "pending"

    cancelled = ronin("jobs", "cancel", job_id, **env)
    assert cancelled.returncode == 0, cancelled.stderr
    shown = json.loads(ronin("jobs", "show", job_id, "--json", **env).stdout)
    assert shown["job"]["status"] == "failed"
    assert shown["job"]["error"]["code"] == "CANCELLED"
    assert shown["attempts"] == []

    again = ronin("jobs", "cancel", job_id, **env)
    assert again.returncode == 1
    assert "has already ended (failed)" in again.stderr
    followed = ronin("jobs", "follow", job_id, **env)
    assert followed.returncode == 1
    assert "failed" in followed.stdout
    assert ronin("jobs", "show", "not-a-job", **env).returncode == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("not-a-cidr", "'not-a-cidr' is a single word, not a domain name"),
        ("127.7.0.0/33", "prefix length 33 > 32"),
        ("127.7.0.300/24", "Octet 300 (> 255)"),
    ],
)
def test_a_mistyped_target_is_refused_and_queues_no_job(
    db_url: str, target: str, reason: str
) -> None:
    for command in (("discover", target), ("schedules", "add", "typo", target)):
        done = ronin(*command, RONIN_DATABASE_URL=db_url)
        assert done.returncode == 1, done.stdout
        assert reason in " ".join(done.stderr.split()), done.stderr
        assert "Traceback" not in done.stderr
    with psycopg.connect(db_url) as conn:
        jobs = conn.execute("SELECT count(*) FROM discovery_jobs").fetchone()
        schedules = conn.execute("SELECT count(*) FROM discovery_schedules").fetchone()
    assert (jobs, schedules) == ((0,), (0,))
