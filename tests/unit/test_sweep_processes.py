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
        process.terminate()  # the test's minute-long block: not worth the wait (the pool's
        # own thread reaps it: a join here would race that thread for the exit status)


def test_processes_started_ahead_are_the_next_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    from ronin.discovery import sweep

    monkeypatch.setattr(sweep, "_started", None)
    sweep.start_sweep_processes()
    pool = sweep._started
    assert pool is not None
    sweep.start_sweep_processes()  # once: a second call starts nothing more
    assert sweep._started is pool
    try:
        assert pool.submit(int, "7").result(timeout=60) == 7  # they run
        assert len(pool._processes) == sweep.sweep_process_count()  # type: ignore[attr-defined]
        assert sweep._take_started() is pool
        assert sweep._started is None  # taken: the sweep after it starts its own
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize(
    ("target", "started"),
    [("127.0.0.0/16", True), ("127.0.0.0/24", False), ("8.8.0.0/16", False)],
    ids=["a large sweep", "a small one (in this loop)", "outside the scope policy"],
)
def test_discover_starts_sweep_processes_only_for_a_sweep_that_will_use_them(
    monkeypatch: pytest.MonkeyPatch, target: str, started: bool
) -> None:
    from ronin.cli import discover
    from ronin.discovery import sweep
    from ronin.discovery.policy import ScopePolicy

    calls: list[None] = []
    monkeypatch.setattr(sweep, "start_sweep_processes", lambda: calls.append(None))
    params = discover.target_params(target, depth=1, ports=[], protocols=[])
    discover._start_sweep_processes_for(params, ScopePolicy.default())
    assert bool(calls) == started
