"""An mDNS advertiser to run in a test's network namespace: ``python -m`` this, one JSON spec.

It advertises one ``_kos._tcp`` instance, bound to the ``interface`` address only, prints
``ready <instance name>`` once it is announced, and withdraws (goodbye, awaited) on SIGTERM or
SIGINT, then exits 0. With ``raw_txt_hex`` it is a hostile node instead: the TXT record is
those bytes verbatim, whatever they are, registered with zeroconf directly.

Spec keys: ``name``, ``addresses``, ``port``, ``node_id``, ``node_class``, ``interface``, and
optionally ``path`` and ``raw_txt_hex``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from ronin.discovery.descriptor import DESCRIPTOR_PATH
from ronin.discovery.mdns import SERVICE_TYPE, advertise

STEP_TIMEOUT_S = 10.0


async def main(spec: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if "raw_txt_hex" in spec:
            name = await stack.enter_async_context(raw_advertise(spec))
        else:
            instance = await stack.enter_async_context(
                advertise(
                    name=spec["name"],
                    host_address=spec["addresses"],
                    port=spec["port"],
                    node_id=spec["node_id"],
                    node_class=spec["node_class"],
                    path=spec.get("path", DESCRIPTOR_PATH),
                    interfaces=[spec["interface"]],
                )
            )
            name = instance.name
        print(f"ready {name}", flush=True)
        await stop.wait()


@contextlib.asynccontextmanager
async def raw_advertise(spec: dict[str, Any]) -> AsyncIterator[str]:
    """Register an instance whose TXT record is arbitrary bytes; say goodbye on the way out."""
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"{spec['name']}.{SERVICE_TYPE}",
        port=spec["port"],
        properties=bytes.fromhex(spec["raw_txt_hex"]),
        server=f"{spec['name']}-host.local.",
        parsed_addresses=spec["addresses"],
    )
    async with AsyncZeroconf(interfaces=[spec["interface"]]) as aiozc:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await (await aiozc.async_register_service(info))
        try:
            yield info.name
        finally:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await (await aiozc.async_unregister_service(info))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
