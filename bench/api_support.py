"""What ``bench/api.py`` stands on: the bare ASGI handler it measures Ronin against, the wrk
script that reports each run, and the server processes, started and stopped.

Run as ``python -m bench.api_support bare BODY_FILE``, this module is the baseline's process: a
plain ASGI callable (no framework) answering every request with the bytes of BODY_FILE as JSON,
served by uvicorn with the options ``ronin serve`` uses, on a free port of 127.0.0.1. Like
``ronin serve`` it prints ``listening on http://127.0.0.1:<port>`` to standard error once it
listens, and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from bench.harness import ROOT, BenchError, log_tail, stop_process

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.05
STOP_GRACE_S = 20.0
WRK_GRACE_S = 30.0
RESULT_MARK = "ronin-bench-result "

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- The bare handler ------------------------------------------------------------------------


def bare_app(body: bytes) -> App:
    """An ASGI callable answering every HTTP request 200 with ``body`` as JSON."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handlers, as in ``ronin serve``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_bare(body: bytes) -> None:
    """Serve ``body`` on a free loopback port until SIGTERM or SIGINT."""
    config = uvicorn.Config(
        bare_app(body),
        host="127.0.0.1",
        port=0,
        loop="none",  # the running loop: uvloop, as ronin serve runs it
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        backlog=4096,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve(), name="bare")
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(READY_POLL_S)
    if not serving.done():
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"bare handler: listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await serving


# --- Server processes ------------------------------------------------------------------------


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset`` to run on ``cpu`` alone (and its threads too), if given."""
    return ["taskset", "--cpu-list", str(cpu), *command] if cpu is not None else command


@dataclass(slots=True)
class Served:
    """A server process: its pid, port and log; its exit code once stopped."""

    name: str
    pid: int
    port: int
    log: Path
    exit_code: int | None = None


@asynccontextmanager
async def server_process(
    name: str, command: list[str], env: dict[str, str], log: Path, cpu: int | None
) -> AsyncIterator[Served]:
    """Start a server that prints ``listening on http://127.0.0.1:<port>`` to standard error;
    yield once it has; SIGTERM it (SIGKILL after a grace period) on the way out, whatever
    happened. Its output goes to ``log``."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            *pinned(command, cpu),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=descriptor,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches this process only: it stops them
        )
    finally:
        os.close(descriptor)
    served = Served(name, process.pid, 0, log)
    try:
        served.port = await wait_listening(name, process, log)
        yield served
    finally:
        served.exit_code = await stop_process(process, grace_s=STOP_GRACE_S)


def listening_port(log: Path) -> int | None:
    """The port a server's log says it listens on, if it says so yet."""
    found = LISTENING.search(log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


async def wait_listening(name: str, process: asyncio.subprocess.Process, log: Path) -> int:
    """The port a starting server prints, once it does; BenchError if it exits or is slow."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        port = listening_port(log)
        if port is not None:
            return port
        if process.returncode is not None:
            raise BenchError(
                f"{name} exited {process.returncode} before listening:\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"{name} not listening after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log)}"
            )
        await asyncio.sleep(READY_POLL_S)


# --- wrk -------------------------------------------------------------------------------------

#: Reports each run as one JSON line (latencies in microseconds). For a POST, ``request``
#: counts what it sends: wrk writes every request right after making it, except one, made on
#: the first thread before the run to check it (hence -1 there).
WRK_REPORT = """
local threads = {}
sent = 0

function setup(thread)
    table.insert(threads, thread)
    if #threads == 1 then
        thread:set("sent", -1)
    end
end

function done(summary, latency, requests)
    local total = 0
    for _, thread in ipairs(threads) do
        total = total + (thread:get("sent") or 0)
    end
    io.write(string.format(
        '%s{"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, "connect": %.0f,'
        .. ' "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f,'
        .. ' "p50_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "sent": %.0f}\\n',
        "RESULT_MARK", summary.duration, summary.requests, summary.bytes,
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.status, summary.errors.timeout, latency:percentile(50),
        latency:percentile(99), latency.max, total))
end
""".replace("RESULT_MARK", RESULT_MARK)

WRK_POST = """
wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
local prepared = nil

function request()
    sent = sent + 1
    if prepared == nil then
        prepared = wrk.format()
    end
    return prepared
end
"""


#: A POST whose every request carries an Idempotency-Key of its own (this run's, by the time
#: it started, and the request's number): each job is new, and written on its own.
WRK_POST_KEYED = """
wrk.method = "POST"
wrk.body = BODY
local run = tostring(os.time())

function request()
    sent = sent + 1
    local headers = {}
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = "bench-" .. run .. "-" .. sent
    return wrk.format(nil, nil, headers)
end
"""


def wrk_script(post_body: bytes | None, *, keyed: bool = False) -> str:
    """The Lua script of one run: the report, and for a POST its method, body and header
    (with ``keyed``, a fresh Idempotency-Key per request)."""
    if post_body is None:
        return WRK_REPORT
    # A JSON string is a valid Lua string literal for the ASCII bodies sent here.
    literal = json.dumps(post_body.decode("ascii"))
    return WRK_REPORT + (WRK_POST_KEYED if keyed else WRK_POST).replace("BODY", literal)


@dataclass(frozen=True, slots=True)
class WrkRun:
    """What wrk reported of one run."""

    label: str
    seconds: float
    requests: int
    bytes_read: int
    socket_errors: dict[str, int]
    #: Answers with a status above 399 (what wrk prints as "Non-2xx or 3xx responses").
    bad_status: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Requests written (counted by the POST script; 0 for a GET).
    sent: int
    output: str
    #: CPU seconds used during the run: by the server process, its database backends (when
    #: local), wrk, and by everything else on the machine.
    server_cpu_s: float = 0.0
    database_cpu_s: float | None = None
    wrk_cpu_s: float = 0.0
    other_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_share(self, seconds: float | None) -> str:
        """CPU seconds as a share of the run (100%: one CPU busy all along)."""
        return f"{seconds / self.seconds:.0%}" if seconds is not None and self.seconds else "-"

    def describe_errors(self) -> str:
        """wrk's socket errors, by kind, or "none"."""
        errors = [f"{kind} {count}" for kind, count in self.socket_errors.items() if count]
        return ", ".join(errors) or "none"

    @property
    def answered_ok(self) -> int:
        """Answers with a status below 400."""
        return self.requests - self.bad_status


async def run_wrk(
    label: str,
    url: str,
    *,
    script: Path,
    connections: int,
    seconds: int,
    cpu: int | None,
) -> WrkRun:
    """One wrk run (1 thread, keep-alive) of ``url``; what it reported."""
    command = ["wrk", "--threads", "1", "--connections", str(connections)]
    command += ["--duration", f"{seconds}s", "--script", str(script), url]
    process = await asyncio.create_subprocess_exec(
        *pinned(command, cpu),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(seconds + WRK_GRACE_S):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    output = out.decode(errors="replace")
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        raise BenchError(f"wrk exited {process.returncode} without its report:\n{output}")
    report = json.loads(lines[-1].removeprefix(RESULT_MARK))
    return WrkRun(
        label=label,
        seconds=report["duration_us"] / 1e6,
        requests=int(report["requests"]),
        bytes_read=int(report["bytes"]),
        socket_errors={name: int(report[name]) for name in ("connect", "read", "write", "timeout")},
        bad_status=int(report["status"]),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        sent=int(report["sent"]),
        output=output,
    )


def main(argv: list[str]) -> int:
    """``bare BODY_FILE``: be the baseline's process."""
    if len(argv) != 2 or argv[0] != "bare":
        print("usage: python -m bench.api_support bare BODY_FILE", file=sys.stderr)
        return 2
    body = Path(argv[1]).read_bytes()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_bare(body))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
