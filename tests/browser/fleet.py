"""A small fleet of honest beacons for the browser tests, each one killable on its own.

``tests.support.fleet.honest_fleet`` serves a whole fleet from one ``BeaconServer``; here every
node has a server of its own (in one thread, beside the synchronous Playwright tests), so a
test can stop one node and watch the page mark it ``gone``.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

from ronin.beacon import BeaconServer, base_url, demo_descriptor
from ronin.discovery.descriptor import CANONICAL_CLASSES
from tests.support.fleet import CLASS_CAPABILITIES, Beacon, addresses

START_TIMEOUT_S = 30.0


class FleetThread:
    """``count`` beacons on distinct addresses of ``network``, peers as a ring (links to draw)."""

    def __init__(self, network: str, count: int, port: int) -> None:
        self.network = network
        self.port = port
        self.hosts = addresses(network, count)
        self.fleet: list[Beacon] = []
        self._servers: list[BeaconServer] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="beacons")

    def _run(self) -> None:
        async def start() -> None:
            count = len(self.hosts)
            for index, host in enumerate(self.hosts):
                node_class = CANONICAL_CLASSES[index % len(CANONICAL_CLASSES)]
                peers = [base_url(self.hosts[(index + 1) % count], self.port)] if count > 1 else []
                descriptor = demo_descriptor(
                    host,
                    self.port,
                    node_class,
                    CLASS_CAPABILITIES.get(node_class, ("general",)),
                    peers=peers,
                )
                server = BeaconServer()
                self._servers.append(server)
                await server.add(host, self.port, descriptor)
                self.fleet.append(Beacon(host, self.port, descriptor))

        try:
            self._loop.run_until_complete(start())
        except BaseException as failure:  # reported to the test by __enter__
            self._failure = failure
        self._ready.set()
        if self._failure is None:
            self._loop.run_forever()
        for server in self._servers:
            self._loop.run_until_complete(server.close())
        self._loop.close()

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise AssertionError(f"the beacons did not start within {START_TIMEOUT_S}s")
        if self._failure is not None:
            self._thread.join(START_TIMEOUT_S)
            raise AssertionError(f"the beacons did not start: {self._failure!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)

    def kill(self, index: int) -> None:
        """Stop node ``index`` listening (its connections closed): it is dead from now on."""
        done = asyncio.run_coroutine_threadsafe(self._servers[index].close(), self._loop)
        done.result(START_TIMEOUT_S)
