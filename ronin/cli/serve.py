"""``ronin serve``: the node. The HTTP API and a worker, in one process, on one database."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn
import uvloop

from ronin.api.app import create_app
from ronin.api.state import NodeState
from ronin.cli.common import app, error_console, run, service_map
from ronin.cli.logs import log_at_info
from ronin.config import Settings
from ronin.discovery.params import KOS_PORT
from ronin.errors import BindFailed, InvalidValue
from ronin.jobs.discovery_executor import discovery_executor
from ronin.jobs.executor import load_executor
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.database import Database, open_database, open_pool
from ronin.store.jobs import JobStore

logger = logging.getLogger(__name__)
STARTUP_POLL_S = 0.05
KEEP_ALIVE_S = 30


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

    Migrates the database on start. More workers on other machines: ronin worker. Logs each
    job's start and end (and, with --access-log, each request) to stderr.
    """
    log_at_info(*(["uvicorn.access"] if access_log else []))

    async def work(settings: Settings) -> None:
        check_bind(host, settings)
        if not settings.api_tokens:
            logger.warning("no RONIN_API_TOKENS: the API is open to anyone on this machine")
        async with await open_database(settings, migrate=True) as database:
            await _serve(settings, database, host, port, workers, executor, access_log)

    run(work, loop_factory=uvloop.new_event_loop)


async def _serve(
    settings: Settings,
    database: Database,
    host: str,
    port: int,
    workers: int,
    executor: str | None,
    access_log: bool = False,
) -> None:
    api = create_app(settings, database)
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
    stop = asyncio.Event()
    runner: Worker | None = None

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True
            if runner is not None:
                runner.hurry()
        stop.set()
        state.closing.set()
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)

    async with contextlib.AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        if workers:
            worker_db = await stack.enter_async_context(
                await open_pool(database.conninfo, settings, for_worker=True)
            )
            runner = Worker(
                conninfo=database.conninfo,
                store=JobStore(worker_db.pool),
                services=service_map(worker_db, settings),
                executor=load_executor(executor) if executor else discovery_executor(settings),
                options=WorkerOptions.from_settings(settings, workers),
            )
            tasks.append(asyncio.create_task(runner.run(stop), name="worker"))
        serving = asyncio.create_task(_serve_api(server), name="api")
        tasks.append(serving)
        await _announce(server, serving, workers, settings)
        await asyncio.gather(*tasks)


async def _serve_api(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn's answer to an address it cannot bind
        raise BindFailed(
            f"could not listen on {server.config.host}:{server.config.port} "
            "(in use, or not an address of this machine)"
        ) from None


async def _announce(
    server: uvicorn.Server, serving: asyncio.Task[None], workers: int, settings: Settings
) -> None:
    """Print where the node listens once it does (the port may have been 0)."""
    # Uvicorn offers no event for "listening"; its flag is polled, briefly.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(STARTUP_POLL_S)
    if serving.done():
        return
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    error_console.print(
        f"ronin serve: node {settings.node_id} listening on http://{shown}:{port} "
        f"with {workers} job slots",
        highlight=False,
        soft_wrap=True,
    )
