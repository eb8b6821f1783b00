"""An abandoned sweep kills its processes' running blocks instead of waiting for them: at a slow
rate one block is many seconds of work (issue 10: Ctrl-C took 25 s to hand a job back)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from ronin.discovery.sweep import _stop


def started(pool: ProcessPoolExecutor) -> Future[None]:
    """A block that would run for a minute, once a process has it."""
    pool.submit(time.sleep, 0).result()  # the processes are up
    future = pool.submit(time.sleep, 60)
    while not future.running():
        time.sleep(0.01)
    return future


def test_an_abandoned_sweep_kills_the_block_it_was_running() -> None:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    block = started(pool)
    processes = list(pool._processes.values())  # type: ignore[attr-defined]
    _stop(pool, abandon=True)
    with pytest.raises((BrokenProcessPool, CancelledError)):
        block.result(timeout=0)
    assert not any(process.is_alive() for process in processes)


def test_a_finished_sweep_lets_its_processes_finish_without_waiting_for_them() -> None:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    block = started(pool)
    processes = list(pool._processes.values())  # type: ignore[attr-defined]
    _stop(pool, abandon=False)
    assert not block.done()  # returned at once
    with pytest.raises(TimeoutError):
        block.result(timeout=0.5)  # and left the block running
    for process in processes:
        process.terminate()  # the test's minute-long block: not worth the wait
        process.join(timeout=30)
    assert not any(process.is_alive() for process in processes)
