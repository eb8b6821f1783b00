"""SIGINT and SIGTERM for the long-running commands: the first asks to stop, a later one hurries."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _nothing() -> None:
    """No extra step on a signal."""


class Signals:
    """The stop signals as they arrive, on the running loop.

    ``stop`` is set by the first; ``on_hurry`` runs on every later one, before ``on_stop``
    (which runs on each). ``received`` lists them in order and ``until`` waits for the next.
    Entered with ``with``, the handlers go at its end; ``install`` leaves them to the loop.
    """

    def __init__(
        self, *, on_stop: Callable[[], None] = _nothing, on_hurry: Callable[[], None] = _nothing
    ) -> None:
        self.received: list[int] = []
        self.arrived = asyncio.Event()
        self.stop = asyncio.Event()
        self._on_stop = on_stop
        self._on_hurry = on_hurry

    def install(self) -> Signals:
        """Handle the stop signals on the running loop until it closes (or ``__exit__``)."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        return self

    def __enter__(self) -> Signals:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self.received.append(signum)
        if self.stop.is_set():
            self._on_hurry()
        self.stop.set()
        self._on_stop()
        self.arrived.set()

    async def until(self, task: asyncio.Future[Any], timeout_s: float | None = None) -> None:
        """Wait for ``task``, the next signal or the timeout, whichever comes first."""
        self.arrived.clear()
        arrived = asyncio.create_task(self.arrived.wait())
        try:
            await asyncio.wait({task, arrived}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            arrived.cancel()
            await asyncio.gather(arrived, return_exceptions=True)
