"""The long-running commands' signals: the first asks to stop, a later one hurries."""

from __future__ import annotations

import asyncio
import os
import signal

from ronin.cli.signals import Signals


async def delivered(signals: Signals, signum: int) -> None:
    """Send ``signum`` to this process and wait until the loop has handled it."""
    waiting = asyncio.get_running_loop().create_future()
    os.kill(os.getpid(), signum)
    await signals.until(waiting, timeout_s=5)


async def test_the_first_signal_stops_and_every_later_one_hurries() -> None:
    steps: list[str] = []
    with Signals(on_stop=lambda: steps.append("stop"), on_hurry=lambda: steps.append("hurry")) as s:
        await delivered(s, signal.SIGTERM)
        assert s.stop.is_set()
        assert steps == ["stop"]
        await delivered(s, signal.SIGINT)
        await delivered(s, signal.SIGTERM)
    assert steps == ["stop", "hurry", "stop", "hurry", "stop"]
    assert s.received == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]


async def test_until_returns_with_the_task_or_at_the_timeout_when_no_signal_comes() -> None:
    with Signals() as signals:
        done = asyncio.ensure_future(asyncio.sleep(0))
        await signals.until(done)
        assert done.done()
        never = asyncio.get_running_loop().create_future()
        await signals.until(never, timeout_s=0.01)
        assert not never.done()
        assert signals.received == []
        assert not signals.stop.is_set()
