"""``ronin watch`` as an operator runs it: a real process printing the changes written by hand,
on the database and through a ``ronin serve`` that is stopped and started again."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ronin.store.changes import ChangeFeed, format_cursor
from tests.acceptance.serve_support import environment, served_node
from tests.acceptance.test_cli import ronin
from tests.acceptance.test_cli_operator import TERMINAL_80, plain
from tests.acceptance.test_serve import READ, TOKENS

LINE_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
_WATCHING = re.compile(r"watching the changes after cursor (\d{16})")
# Verification off, so no check writes a state change the test did not; heartbeats often, so
# a node stopping ends its streams at once.
QUIET = {"RONIN_VERIFY_INTERVAL_S": "0", "RONIN_CHANGES_HEARTBEAT_S": "1"}


@dataclass
class Watch:
    """A running ``ronin watch``: its stdout a line at a time, its stderr as it grows."""

    popen: subprocess.Popen[bytes]
    lines: queue.Queue[bytes] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)
    start: str = ""

    def read(self, count: int) -> list[bytes]:
        """The next ``count`` lines of stdout (without their newline)."""
        found = []
        for _ in range(count):
            try:
                found.append(self.lines.get(timeout=LINE_TIMEOUT_S).rstrip(b"\n"))
            except queue.Empty:
                raise AssertionError(f"got {found} then nothing; stderr:\n{self.stderr}") from None
        return found

    def nothing_more(self) -> bool:
        return self.lines.empty()

    @property
    def stderr(self) -> str:
        return "".join(self.errors)

    def stop(self) -> int:
        """Ctrl-C, and its exit code."""
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=STOP_TIMEOUT_S)


def _pump(stream: object, sink: queue.Queue[bytes] | list[str]) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        if isinstance(sink, list):
            sink.append(line.decode(errors="replace"))
        else:
            sink.put(line)


@contextmanager
def watching(*args: str, **env: str) -> Iterator[Watch]:
    """``ronin watch ARGS``, once it says where it starts (so what is written next is seen)."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "ronin", "watch", *args],
        env=environment(**QUIET, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watch = Watch(popen)
    threads = [
        threading.Thread(target=_pump, args=(popen.stdout, watch.lines), daemon=True),
        threading.Thread(target=_pump, args=(popen.stderr, watch.errors), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while (started := _WATCHING.search(watch.stderr)) is None:
            if popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ronin watch did not start:\n{watch.stderr}")
            time.sleep(0.05)
        watch.start = started[1]
        yield watch
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait()
        for thread in threads:
            thread.join(timeout=5)
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()


def insert(
    db_url: str, number: int, *, capabilities: tuple[str, ...] = ("klf",), node_class: str = "Griot"
) -> str:
    service_id = f"did:kos:service:{number:03d}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO discovered_services (service_id, node_id, node_class, endpoint,"
            " capabilities, discovery_metadata, last_seen)"
            " VALUES (%s, %s, %s, 'http://127.0.0.1:1/klf', %s, '{}', now())",
            (service_id, f"did:kos:node:{number:03d}", node_class, Jsonb(list(capabilities))),
        )
    return service_id


def execute(db_url: str, sql: str, *params: object) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql, params or None)


def feed_after(db_url: str, cursor: str) -> list[bytes]:
    """Every change record after ``cursor``, as the feed encodes it (what the API sends)."""

    async def read() -> list[bytes]:
        async with AsyncConnectionPool(db_url, min_size=1, max_size=1, open=False) as pool:
            page = await ChangeFeed(pool).page(cursor, limit=1000)
        return [change.json_bytes() for change in page.changes]

    return asyncio.run(read())


def kinds(lines: list[bytes]) -> list[tuple[str, str]]:
    return [(record["type"], record["service_id"][-3:]) for record in map(orjson.loads, lines)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_prints_exactly_the_changes_written_after_it_started(db_url: str) -> None:
    insert(db_url, 1)  # before the watch: not printed
    with watching("--json", RONIN_DATABASE_URL=db_url) as watch:
        service_id = insert(db_url, 2)
        execute(db_url, "UPDATE discovered_services SET last_seen = now() WHERE true")  # no change
        execute(
            db_url,
            "UPDATE discovered_services SET endpoint = 'http://127.0.0.1:2/klf'"
            " WHERE service_id = %s",
            service_id,
        )
        execute(db_url, "DELETE FROM discovered_services WHERE service_id = %s", service_id)
        lines = watch.read(3)
        assert kinds(lines) == [
            ("service_added", "002"),
            ("service_changed", "002"),
            ("service_removed", "002"),
        ]
        assert lines == feed_after(db_url, watch.start)  # byte for byte the API's records
        assert watch.stop() == 0
    assert watch.nothing_more()
    last = orjson.loads(lines[-1])["cursor"]
    assert f"stopped; resume with --since {last}" in watch.stderr


def test_filters_keep_only_the_changes_asked_for(db_url: str) -> None:
    args = ("--json", "--capability", "klf", "--capability", "did", "--class", "griot")
    with watching(*args, RONIN_DATABASE_URL=db_url) as watch:
        insert(db_url, 1, capabilities=("klf",))
        insert(db_url, 2, capabilities=("klf", "did"), node_class="Tohunga")
        insert(db_url, 3, capabilities=("did", "klf", "x"))
        execute(
            db_url,
            "UPDATE service_liveness SET state = 'suspect' WHERE service_id = ANY(%s)",
            ["did:kos:service:001", "did:kos:service:003"],
        )
        lines = watch.read(2)
        assert kinds(lines) == [("service_added", "003"), ("service_state", "003")]
        state = orjson.loads(lines[1])
        assert (state["from"], state["to"]) == ("alive", "suspect")
        assert watch.stop() == 0
    assert watch.nothing_more()
    with watching("--json", "--node", "did:kos:node:001", RONIN_DATABASE_URL=db_url) as watch:
        insert(db_url, 4)
        execute(db_url, "DELETE FROM discovered_services WHERE service_id LIKE %s", "%00_")
        assert kinds(watch.read(1)) == [("service_removed", "001")]
        assert watch.stop() == 0
    assert watch.nothing_more()


def test_on_a_terminal_it_prints_a_line_each(db_url: str) -> None:
    with watching(RONIN_DATABASE_URL=db_url, **TERMINAL_80) as watch:
        insert(db_url, 1)
        execute(db_url, "UPDATE service_liveness SET state = 'gone'")
        added, state = (plain(line.decode()) for line in watch.read(2))
        assert watch.stop() == 0
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  service_added    did:kos:service:001  "
        r"did:kos:node:001 \(Griot\)  http://127.0.0.1:1/klf",
        added,
    )
    assert state.endswith(
        "service_state    did:kos:service:001  did:kos:node:001 (Griot)  alive -> gone"
    )


def test_an_expired_cursor_exits_1_naming_the_current_one(tmp_path: Path, db_url: str) -> None:
    for number in range(3):
        insert(db_url, number)
    execute(db_url, "UPDATE map_change_head SET pruned_through = 2")  # as a prune leaves it
    current = format_cursor(3)
    old = format_cursor(1)
    done = ronin("watch", "--json", "--since", old, RONIN_DATABASE_URL=db_url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"the current cursor is {current}" in done.stderr
    assert f"ronin watch --since {current}" in done.stderr
    with served_node(tmp_path, db_url, "--workers", "0", **QUIET) as node:
        remote = ronin("watch", "--since", old, RONIN_URL=node.url)
    assert remote.returncode == 1
    assert remote.stdout == ""
    assert f"the current cursor is {current}" in remote.stderr
    assert ronin("watch", "--since", "12", RONIN_DATABASE_URL=db_url).returncode == 1


def test_through_a_node_it_resumes_across_a_restart_losing_and_repeating_nothing(
    tmp_path: Path, db_url: str
) -> None:
    port = str(free_port())
    serve = ("--workers", "0", "--port", port)
    with (
        served_node(tmp_path, db_url, *serve, **QUIET) as node,
        watching("--json", "--capability", "klf", RONIN_URL=node.url) as watch,
    ):
        for number in range(1, 4):
            insert(db_url, number)
        insert(db_url, 100, capabilities=("other",))  # filtered out, on the node's side
        first = watch.read(3)
        node.stop()
        for number in range(4, 7):  # while the node is down
            insert(db_url, number)
        with served_node(tmp_path, db_url, *serve, **QUIET):
            for number in range(7, 9):
                insert(db_url, number)
            rest = watch.read(5)
            assert watch.stop() == 0
    assert [service for _, service in kinds(first + rest)] == [f"{n:03d}" for n in range(1, 9)]
    assert watch.nothing_more()
    wanted = [line for line in feed_after(db_url, watch.start) if b'"klf"' in line]
    assert first + rest == wanted  # byte for byte what the node sent
    assert "lost the change stream" in watch.stderr
    assert "reconnected" in watch.stderr


def test_a_reader_that_goes_ends_the_watch_with_exit_0(tmp_path: Path, db_url: str) -> None:
    """As ``ronin watch --json | head -1`` does: the pipe closes after the first line."""
    reading, writing = os.pipe()
    with (tmp_path / "stderr").open("wb") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "ronin", "watch", "--json"],
            env=environment(**QUIET, RONIN_DATABASE_URL=db_url),
            stdout=writing,
            stderr=stderr,
        )
    os.close(writing)
    try:
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while not _WATCHING.search((tmp_path / "stderr").read_text()):
            assert popen.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        insert(db_url, 1)
        assert select.select([reading], [], [], LINE_TIMEOUT_S)[0], "no line came"
        with os.fdopen(reading, "rb") as pipe:
            assert kinds([pipe.readline()]) == [("service_added", "001")]
        insert(db_url, 2)
        assert popen.wait(timeout=STOP_TIMEOUT_S) == 0
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    assert "resume with --since" in (tmp_path / "stderr").read_text()


def test_through_a_node_with_tokens_it_needs_a_read_token(tmp_path: Path, db_url: str) -> None:
    with served_node(tmp_path, db_url, "--workers", "0", RONIN_API_TOKENS=TOKENS, **QUIET) as node:
        for token in ({}, {"RONIN_TOKEN": "not-a-token-0123456789"}):
            refused = ronin("watch", "--json", RONIN_URL=node.url, **token)
            assert refused.returncode == 1
            assert refused.stdout == ""
            assert "error:" in refused.stderr
        with watching("--json", RONIN_URL=node.url, RONIN_TOKEN=READ) as watch:
            insert(db_url, 1)
            assert kinds(watch.read(1)) == [("service_added", "001")]
            assert watch.stop() == 0


def test_on_the_database_it_resumes_after_its_connections_are_cut(db_url: str) -> None:
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with watching("--json", RONIN_DATABASE_URL=db_url) as watch:
        insert(db_url, 1)
        first = watch.read(1)
        execute(db_url, terminate)  # the pool's and the LISTEN connection alike
        for number in range(2, 5):
            insert(db_url, number)
        execute(db_url, terminate)
        insert(db_url, 5)
        rest = watch.read(4)
        assert watch.stop() == 0
    assert watch.nothing_more()
    assert first + rest == feed_after(db_url, watch.start)
