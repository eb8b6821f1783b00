"""``ronin serve``: the node. The HTTP API and a worker, in one process, on one database."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn
import uvloop

from ronin.api.app import create_app
from ronin.api.state import NodeState
from ronin.cli.common import app, error_console, run
from ronin.cli.logs import log_at_info
from ronin.cli.signals import Signals
from ronin.config import Settings
from ronin.discovery.params import KOS_PORT
from ronin.errors import BindFailed, InvalidValue
from ronin.jobs.verifying import run_beside
from ronin.jobs.worker import Worker
from ronin.node import Node, open_node
from ronin.store.database import open_pool

logger = logging.getLogger(__name__)
STARTUP_POLL_S = 0.05
KEEP_ALIVE_S = 30
#: A connection whose peer has acknowledged nothing for this long is reset.
STALLED_CLIENT_S = 30.0


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handlers: ``serve`` decides how the node stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def check_bind(host: str, settings: Settings) -> None:
    """Without API tokens the node listens on loopback only; anything else is refused."""
    if settings.api_tokens or _is_loopback(host):
        return
    raise InvalidValue(
        f"refusing to serve on {host} without API tokens: anyone who reaches it could run "
        "scans. Set RONIN_API_TOKENS (e.g. write:<secret>,read:<secret>) or serve on 127.0.0.1",
        field="host",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = KOS_PORT,
    workers: Annotated[
        int, typer.Option(min=0, max=256, help="Jobs this process runs at once (0: API only).")
    ] = 4,
    access_log: Annotated[
        bool, typer.Option(help="Log every HTTP request (one INFO line each).")
    ] = False,
    executor: Annotated[
        str | None, typer.Option(hidden=True, help="module:attribute of a test executor.")
    ] = None,
) -> None:
    """Run the node: the HTTP API and a worker, until SIGTERM/SIGINT (a second one hurries).

    Migrates the database on start. With job slots, also re-checks the map's nodes
    (RONIN_VERIFY_INTERVAL_S; 0: never). More workers on other machines: ronin worker. Logs each
    job's start and end (and, with --access-log, each request) to stderr.
    """
    log_at_info(*(["uvicorn.access"] if access_log else []))

    async def work(settings: Settings) -> None:
        check_bind(host, settings)
        if not settings.api_tokens:
            logger.warning("no RONIN_API_TOKENS: the API is open to anyone on this machine")
        async with open_node(settings, migrate=True) as node:
            await _serve(node, host, port, workers, executor, access_log)

    run(work, loop_factory=uvloop.new_event_loop)


async def _serve(
    node: Node,
    host: str,
    port: int,
    workers: int,
    executor: str | None,
    access_log: bool = False,
) -> None:
    settings = node.settings
    api = create_app(settings, node.database)
    state: NodeState = api.state.node
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        loop="none",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=access_log,
        server_header=False,
        backlog=4096,
        # Longer than clients keep idle connections (httpx 5 s, browsers 15 s or more), so a
        # client never writes a request into a connection the node is closing.
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace.total_seconds())),
    )
    server = _Server(config)
    runner: Worker | None = None

    def on_stop() -> None:
        state.closing.set()
        state.hub.end_streams()
        server.should_exit = True

    def on_hurry() -> None:
        server.force_exit = True
        if runner is not None:
            runner.hurry()

    signals = Signals(on_stop=on_stop, on_hurry=on_hurry).install()

    async with contextlib.AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        if workers:
            worker_db = await stack.enter_async_context(
                await open_pool(node.database.conninfo, settings, for_worker=True)
            )
            runner = node.worker(concurrency=workers, executor=executor, database=worker_db)
            verifier = await stack.enter_async_context(node.verifier(database=worker_db))
            work = run_beside(runner.run(signals.stop), verifier, signals.stop)
            tasks.append(asyncio.create_task(work, name="worker"))
        serving = asyncio.create_task(_serve_api(server), name="api")
        tasks.append(serving)
        await _announce(server, serving, workers, settings)
        await asyncio.gather(*tasks)


async def _serve_api(server: uvicorn.Server) -> None:
    try:
        listening = server.config.bind_socket()
        _drop_stalled_clients(listening)
        await server.serve(sockets=[listening])
    except SystemExit:  # uvicorn's answer to an address it cannot bind
        raise BindFailed(
            f"could not listen on {server.config.host}:{server.config.port} "
            "(in use, or not an address of this machine)"
        ) from None


def _drop_stalled_clients(listening: socket.socket) -> None:
    """Connections (they inherit it) whose peer acknowledges nothing for STALLED_CLIENT_S are
    reset by the kernel. A change-stream client that stops reading is cut off by the app, but
    closing a connection waits for its unsent data, which such a peer never takes."""
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        listening.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(STALLED_CLIENT_S * 1000)
        )


async def _announce(
    server: uvicorn.Server, serving: asyncio.Task[None], workers: int, settings: Settings
) -> None:
    """Print where the node listens once it does (the port may have been 0)."""
    # Uvicorn offers no event for "listening"; its flag is polled, briefly.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(STARTUP_POLL_S)
    if serving.done():
        return
    # What start-up left (modules, the app, the pool) is never garbage: out of the collector's
    # sight, a full collection no longer stalls every stream for 60-80 ms.
    gc.collect()
    gc.freeze()
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    error_console.print(
        f"ronin serve: node {settings.node_id} listening on http://{shown}:{port} "
        f"with {workers} job slots",
        highlight=False,
        soft_wrap=True,
    )
