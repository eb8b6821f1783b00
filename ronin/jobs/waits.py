"""Bounded waits on several events at once."""

from __future__ import annotations

import asyncio


async def wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until any event is set or the timeout passes."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
