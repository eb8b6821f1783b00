"""``ronin beacon``: serve a kOS node descriptor, so there is something to discover."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    mdns: Annotated[
        bool, typer.Option("--mdns", help="Also advertise the node on mDNS (_kos._tcp.local.).")
    ] = False,
    mdns_interface: Annotated[
        list[str] | None,
        typer.Option(help="Advertise on this interface address only (repeatable; default all)."),
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
            if not mdns:
                await stop.wait()
                return
            async with advertised(server.body(key), key, mdns_interface or None) as name:
                print(f"beacon {node_id} advertised on mDNS as {name}", flush=True)
                await stop.wait()
            # leaving the block sent the goodbye: listeners forget the node at once

    try:
        bind_host = beacons.check_host(host)
        if mdns:
            _check_mdns_host(bind_host)
        make = beacons.beacon_descriptor(
            Path(descriptor) if descriptor is not None else None,
            node_class,
            capability or beacons.DEFAULT_CAPABILITIES,
            peer or (),
        )
        asyncio.run(serve(bind_host, make))
    except RoninError as exc:
        fail(exc)


def _check_mdns_host(host: str) -> None:
    """mDNS advertises an address: the beacon must listen on one, not on a name or on all."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise RoninError(f"--mdns needs --host to be an IP address, not {host!r}") from None
    if address.is_unspecified:
        raise RoninError("--mdns needs --host to be one address, not every address")


@asynccontextmanager
async def advertised(
    body: bytes, key: tuple[str, int], interfaces: list[str] | None
) -> AsyncIterator[str]:
    """Advertise the served node under ``_kos._tcp.local.`` with PROTOCOL.md's TXT keys."""
    from ronin.discovery import mdns

    try:
        document = json.loads(body)
        node_id, node_class = str(document["node_id"]), str(document["node_class"])
    except (ValueError, KeyError, TypeError):
        raise RoninError("--mdns needs a descriptor with a node_id and a node_class") from None
    name = f"{node_class}-{node_id.rsplit(':', 1)[-1]}"[:63]
    try:
        async with mdns.advertise(
            name=name,
            host_address=key[0],
            port=key[1],
            node_id=node_id,
            node_class=node_class,
            interfaces=interfaces,
        ) as instance:
            yield instance.name
    except (OSError, ValueError) as exc:
        raise RoninError(f"cannot advertise on mDNS: {exc}") from None
