"""``ronin beacon``: serve a kOS node descriptor, so there is something to discover."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Annotated

import typer

from ronin.cli.common import app, fail
from ronin.errors import RoninError


@app.command()
def beacon(
    host: Annotated[str, typer.Option(help="Address or host name to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 30437,
    descriptor: Annotated[
        str | None, typer.Option(help="Serve this JSON file verbatim instead of a demo node.")
    ] = None,
    node_class: Annotated[str, typer.Option(help="The demo node's class.")] = "Griot",
    capability: Annotated[
        list[str] | None, typer.Option(help="A capability of the demo node (repeatable).")
    ] = None,
    peer: Annotated[
        list[str] | None, typer.Option(help="A peer URL or DID of the demo node (repeatable).")
    ] = None,
) -> None:
    """Serve a kOS node descriptor until SIGTERM/SIGINT: something for a Ronin to discover."""
    # Imported here so the other commands do not load aiohttp; a beacon never opens the database.
    import os
    from pathlib import Path

    from ronin import beacon as beacons

    async def serve(bind_host: str, make: Callable[[str, int], beacons.Descriptor]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with beacons.BeaconServer() as server:
            try:
                key = await server.add(bind_host, port, make)
            except OSError as exc:
                errno = exc.errno or 0  # < 0: a resolver error, whose strerror says it all
                reason = os.strerror(errno) if errno > 0 else exc.strerror or str(exc)
                message = f"cannot listen on {bind_host}:{port}: {reason}"
                raise RoninError(message) from None
            node_id = beacons.node_id_of(server.body(key)) or "(a document without a node_id)"
            print(f"beacon {node_id} serving {beacons.descriptor_url(*key)}", flush=True)
            await stop.wait()

    try:
        bind_host = beacons.check_host(host)
        make = beacons.beacon_descriptor(
            Path(descriptor) if descriptor is not None else None,
            node_class,
            capability or beacons.DEFAULT_CAPABILITIES,
            peer or (),
        )
        asyncio.run(serve(bind_host, make))
    except RoninError as exc:
        fail(exc)
