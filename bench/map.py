"""Benchmark the map at scale: loads, re-sightings, first pages and counts, next to plain SQL.

Usage: ``python -m bench.map [--rows N] [--queries Q] [--seed S] [--keep NAME]`` from the
repository root.

Two scratch databases are created on ``RONIN_DATABASE_URL`` (or on an embedded server of the
benchmark's own) and dropped at the end: "ronin", migrated and written through ``ServiceMap``,
and "baseline", the bare seed schema, written and queried the obvious way. The command exits 0
whether or not a goal is met and prints PASS or MISS for each goal.

``--keep NAME`` keeps the two databases (``ronin_bench_map_NAME_ronin`` and ``..._baseline``)
after the run, and a later run with the same NAME, ``--rows`` and ``--seed`` reuses them: it
skips the loads (and their figures) and goes straight to the queries, so queries can be
iterated on at 1,000,000 services without loading for minutes each time. Without
``RONIN_DATABASE_URL`` the embedded server then lives in ``$TMPDIR/ronin-bench-map-kept``
(stopped at exit, its data kept); a run with another NAME/size/seed replaces them. Drop them
with ``psql -c 'DROP DATABASE ...'`` or delete that directory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from bench.harness import (
    Connection,
    connect,
    peak_rss_mib,
    percentile,
    say,
    scratch_database,
    server_facts,
    server_url,
    verdict_line,
)
from ronin.discovery.descriptor import CANONICAL_CLASSES
from ronin.store.embedded import start_embedded
from ronin.store.migrate import migrate
from ronin.store.models import ServiceFilter, Sighting, UpsertResult
from ronin.store.services import SERVICE_ROW, ServiceMap

SEED_SCHEMA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "seed_schema.sql"
KEPT_DATA_DIR = Path(tempfile.gettempdir()) / "ronin-bench-map-kept"

NODE_CLASSES = CANONICAL_CLASSES
VOCABULARY = tuple(f"cap.{rank:03d}" for rank in range(200))
ZIPF_S = 1.1
# A pure power law over 200 names never drops below ~0.25% of services; an exponential cutoff
# gives the tail its rare capabilities (<0.1%) while the head and middle stay Zipf-like.
TAIL_CUTOFF = 100.0
CUM_WEIGHTS = tuple(
    itertools.accumulate(
        (rank + 1) ** -ZIPF_S * math.exp(-(rank + 1) / TAIL_CUTOFF) for rank in range(200)
    )
)
DISCOVERY_METHODS = ("mdns", "dht", "bootstrap", "gossip")
PROTOCOLS = ("klp/1", "klp/2", "http/1.1")
SERVICES_PER_NODE = 4
BLOCK = 1_000  # rows per RNG seed: row i is the same whatever --rows says

STREAMS = 2
CALL_ROWS = 10_000  # sightings per ServiceMap.upsert call (which writes them 2,000 at a time)
PAGE = 100
SINGLE_STREAM_MAX_ROWS = 100_000
NAIVE_MAX_ROWS = 100_000
NAIVE_BATCH = 2_000
WARMUP_CALLS = 3
CASE_BUDGET_S = 15.0  # a query case stops early (and says so) once it has run this long
COUNT_REPEATS = 5
DIAGNOSIS_EXPLAINS = 20
DIAGNOSIS_PAGES = 300
FRESHNESS_WINDOW = timedelta(hours=24)
RESIGHT_GOAL = 0.5
FIRST_PAGE_GOAL_MS = 10.0

COPY_STATEMENT = (
    "COPY discovered_services (service_id, node_id, node_class, endpoint, capabilities,"
    " discovery_metadata, last_seen) FROM STDIN"
)
NAIVE_UPSERT = """
INSERT INTO discovered_services
    (service_id, node_id, node_class, endpoint, capabilities, discovery_metadata, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (service_id) DO UPDATE SET
    node_id = EXCLUDED.node_id, node_class = EXCLUDED.node_class,
    endpoint = EXCLUDED.endpoint, capabilities = EXCLUDED.capabilities,
    discovery_metadata = EXCLUDED.discovery_metadata, last_seen = EXCLUDED.last_seen
"""
CAPABILITY_FREQUENCIES = """
SELECT capability, count(*)
FROM discovered_services, jsonb_array_elements_text(capabilities) AS capability
GROUP BY capability
"""
EXPLAIN = sql.SQL("EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF) {}")


# --- Synthetic services --------------------------------------------------------------------


class Row(NamedTuple):
    """One synthetic service, as both databases receive it."""

    service_id: str
    node_id: str
    node_class: str
    endpoint: str
    capabilities: tuple[str, ...]
    metadata: dict[str, Any]


def generate(seed: int, start: int, stop: int, sighting: int = 0) -> Iterator[Row]:
    """Rows ``start`` (a multiple of BLOCK) to ``stop``; a re-sighting changes only timings."""
    for block in range(start // BLOCK, -(-stop // BLOCK)):
        rng = random.Random(seed * 1_000_003 + block)
        timing = random.Random((seed * 1_000_003 + block) * 16 + sighting)
        job_id = str(uuid.UUID(int=timing.getrandbits(128), version=4))
        for index in range(block * BLOCK, min((block + 1) * BLOCK, stop)):
            yield make_row(rng, seed, index, job_id, timing.randint(1, 500))


def make_row(rng: random.Random, seed: int, index: int, job_id: str, response_ms: int) -> Row:
    """Service ``index``: its node (and so class and address) is shared with 3 neighbours."""
    node_key = f"{seed}:{index // SERVICES_PER_NODE}".encode()
    node = hashlib.blake2b(node_key, digest_size=16).digest()
    return Row(
        service_id=f"did:kos:service:{rng.getrandbits(128):032x}",
        node_id=f"did:kos:node:{node.hex()}",
        node_class=NODE_CLASSES[node[0] % len(NODE_CLASSES)],
        endpoint=f"http://10.{node[1]}.{node[2]}.{node[3]}:30437/klf",
        capabilities=draw_capabilities(rng),
        metadata={
            "discovery_method": DISCOVERY_METHODS[node[4] % len(DISCOVERY_METHODS)],
            "response_time_ms": response_ms,
            "job_id": job_id,
            "protocols": list(PROTOCOLS[: 1 + node[5] % len(PROTOCOLS)]),
        },
    )


def draw_capabilities(rng: random.Random) -> tuple[str, ...]:
    """2 to 6 distinct capabilities, drawn from the skewed vocabulary."""
    wanted = rng.randint(2, 6)
    drawn: dict[str, None] = {}
    while len(drawn) < wanted:
        for name in rng.choices(VOCABULARY, cum_weights=CUM_WEIGHTS, k=wanted - len(drawn)):
            drawn[name] = None
    return tuple(drawn)


def sighting_of(row: Row, seen_at: datetime) -> Sighting:
    """The sighting a discovery job would report for ``row``."""
    return Sighting(
        service_id=row.service_id,
        node_id=row.node_id,
        node_class=row.node_class,
        endpoint=row.endpoint,
        capabilities=row.capabilities,
        seen_at=seen_at,
        metadata=row.metadata,
    )


def span_unit(rows: int) -> int:
    """Where streams may be cut: a multiple of BLOCK, about 1/20 of the rows, at most 10,000."""
    return max(BLOCK, min(10_000, rows // 20 // BLOCK * BLOCK))


def split(start: int, stop: int, parts: int, chunk: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering start..stop, cut at chunk boundaries."""
    chunks = -(-(stop - start) // chunk)
    bounds = [start + chunk * (chunks * k // parts) for k in range(parts)] + [stop]
    return [(lo, min(hi, stop)) for lo, hi in itertools.pairwise(bounds) if lo < hi]


# --- What is measured ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    """Rows written by one phase, and how long it took."""

    label: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds


@dataclass(frozen=True, slots=True)
class Case:
    """One first-page query, asked of Ronin and of the baseline alike."""

    label: str
    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    by_class: bool = False

    def node_class(self, iteration: int) -> str | None:
        """The class filter of this iteration: the 13 classes in turn, or none."""
        return NODE_CLASSES[iteration % len(NODE_CLASSES)] if self.by_class else None

    def service_filter(self, iteration: int) -> ServiceFilter:
        """What Ronin is asked."""
        return ServiceFilter(
            all_capabilities=self.all_of,
            any_capabilities=self.any_of,
            node_class=self.node_class(iteration),
        )

    def baseline(self, iteration: int) -> tuple[sql.Composed, list[Any]]:
        """The natural SQL on the seed schema, and its parameters."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if self.all_of:
            conditions.append(sql.SQL("capabilities @> %s"))
            params.append(Jsonb(list(self.all_of)))
        if self.any_of:
            conditions.append(sql.SQL("capabilities ?| %s"))
            params.append(list(self.any_of))
        node_class = self.node_class(iteration)
        if node_class is not None:
            conditions.append(sql.SQL("node_class = %s"))
            params.append(node_class)
        statement = sql.SQL(
            "SELECT * FROM discovered_services WHERE {} ORDER BY service_id LIMIT {}"
        ).format(sql.SQL(" AND ").join(conditions), sql.Literal(PAGE))
        return statement, params


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds per call of one case, on both databases."""

    case: Case
    ronin: list[float]
    baseline: list[float]
    #: Garbage collections during Ronin's calls: milliseconds each.
    ronin_gc: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CountTiming:
    """Ronin's bounded count next to an exact count on the baseline."""

    label: str
    ronin_value: str
    ronin_ms: float
    baseline_value: int
    baseline_ms: float


@dataclass(slots=True)
class Report:
    """Everything the final table prints."""

    queries: int
    loads: list[Throughput] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    counts: list[CountTiming] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def load(self, label: str) -> Throughput:
        """The load phase named ``label``."""
        return next(t for t in self.loads if t.label == label)

    def queries_of(self, case: Case) -> list[float]:
        """Ronin's samples of ``case``."""
        return next(x.ronin for x in self.latencies if x.case == case)


async def timed_calls(
    call: Callable[[int], Awaitable[object]], count: int, budget_s: float
) -> list[float]:
    """Milliseconds of up to ``count`` calls after a short warm-up, stopping at ``budget_s``."""
    for iteration in range(WARMUP_CALLS):
        await call(iteration)
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for iteration in range(count):
        started = time.perf_counter()
        await call(iteration)
        samples.append((time.perf_counter() - started) * 1000)
        if time.perf_counter() > deadline:
            break
    return samples


# --- Databases -------------------------------------------------------------------------------


def seed_schema_text() -> str:
    """The founding document's schema, as vendored for the tests."""
    return SEED_SCHEMA.read_text()


async def create_baseline_schema(url: str, seed_sql: str) -> None:
    """The bare seed schema; without uuid-ossp, its built-in v4 equivalent."""
    async with await connect(url) as conn:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'uuid-ossp')"
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            lines = [line for line in seed_sql.splitlines() if "CREATE EXTENSION" not in line]
            seed_sql = "\n".join(lines).replace("uuid_generate_v4()", "gen_random_uuid()")
        await conn.execute(seed_sql.encode())


async def vacuum_analyze(url: str, *tables: str) -> float:
    """VACUUM ANALYZE ``tables`` (the whole database if none is named); seconds taken."""
    started = time.perf_counter()
    async with await connect(url) as conn:
        await conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    return time.perf_counter() - started


# --- Loads -----------------------------------------------------------------------------------


async def copy_rows(url: str, seed: int, rows: int, seen_at: datetime) -> Throughput:
    """Raw COPY of every row into the baseline: the yardstick."""
    started = time.perf_counter()
    async with await connect(url) as conn:
        cur = conn.cursor()
        async with cur.copy(COPY_STATEMENT) as copy:
            for row in generate(seed, 0, rows):
                await copy.write_row(
                    (
                        row.service_id,
                        row.node_id,
                        row.node_class,
                        row.endpoint,
                        json.dumps(row.capabilities),
                        json.dumps(row.metadata),
                        seen_at,
                    )
                )
    return Throughput("baseline COPY, 1 stream", rows, time.perf_counter() - started)


@dataclass(slots=True)
class Tally:
    """What upserts did, summed over chunks."""

    inserted: int = 0
    refreshed: int = 0
    skipped: int = 0


async def upsert_range(
    service_map: ServiceMap, seed: int, span: tuple[int, int], seen_at: datetime, sighting: int
) -> Tally:
    """Upsert rows span[0]..span[1] chunk by chunk, keeping only the counts."""
    tally = Tally()
    chunk: list[Sighting] = []
    for row in generate(seed, span[0], span[1], sighting):
        chunk.append(sighting_of(row, seen_at))
        if len(chunk) == CALL_ROWS:
            add_to_tally(tally, await service_map.upsert(chunk))
            chunk = []
    if chunk:
        add_to_tally(tally, await service_map.upsert(chunk))
    return tally


def add_to_tally(tally: Tally, result: UpsertResult) -> None:
    """Count one UpsertResult."""
    tally.inserted += len(result.inserted)
    tally.refreshed += len(result.refreshed)
    tally.skipped += len(result.conflicts) + len(result.outdated)


async def upsert_streams(
    service_map: ServiceMap,
    seed: int,
    spans: list[tuple[int, int]],
    seen_at: datetime,
    sighting: int,
) -> tuple[float, Tally]:
    """Upsert each span in its own concurrent stream; seconds taken and summed counts."""
    started = time.perf_counter()
    tallies = await asyncio.gather(
        *(upsert_range(service_map, seed, span, seen_at, sighting) for span in spans)
    )
    seconds = time.perf_counter() - started
    total = Tally()
    for tally in tallies:
        total.inserted += tally.inserted
        total.refreshed += tally.refreshed
        total.skipped += tally.skipped
    return seconds, total


def check_tally(report: Report, label: str, tally: Tally, inserted: int, refreshed: int) -> None:
    """Note any upsert outcome other than the expected one."""
    if (tally.inserted, tally.refreshed, tally.skipped) != (inserted, refreshed, 0):
        report.notes.append(
            f"{label}: expected {inserted:,} inserted / {refreshed:,} refreshed, got "
            f"{tally.inserted:,} / {tally.refreshed:,} / {tally.skipped:,} skipped"
        )


async def ronin_first_load(
    service_map: ServiceMap, seed: int, rows: int, seen_at: datetime, report: Report
) -> None:
    """The first load: 10% (at most 100k rows) in one stream, the rest in two."""
    chunk = span_unit(rows)
    single = min(SINGLE_STREAM_MAX_ROWS, max(chunk, rows // 10 // chunk * chunk), rows)
    seconds, tally = await upsert_streams(service_map, seed, [(0, single)], seen_at, 0)
    report.loads.append(Throughput("ronin first load, 1 stream", single, seconds))
    check_tally(report, "first load, 1 stream", tally, single, 0)
    if single < rows:
        spans = split(single, rows, STREAMS, chunk)
        seconds, tally = await upsert_streams(service_map, seed, spans, seen_at, 0)
        report.loads.append(Throughput("ronin first load, 2 streams", rows - single, seconds))
        check_tally(report, "first load, 2 streams", tally, rows - single, 0)


async def ronin_resighting(
    service_map: ServiceMap, seed: int, rows: int, seen_at: datetime, report: Report
) -> None:
    """Every service seen again by its owner, later, with new timings."""
    spans = split(0, rows, STREAMS, span_unit(rows))
    seconds, tally = await upsert_streams(service_map, seed, spans, seen_at, 1)
    report.loads.append(Throughput("ronin re-sighting, 2 streams", rows, seconds))
    check_tally(report, "re-sighting", tally, 0, rows)


async def naive_upserts(url: str, seed: int, rows: int, seen_at: datetime) -> Throughput:
    """One INSERT .. ON CONFLICT per row (executemany), 2,000 rows per transaction."""
    started = time.perf_counter()
    async with await connect(url) as conn:
        rows_iter = generate(seed, 0, rows, sighting=2)
        while batch := list(itertools.islice(rows_iter, NAIVE_BATCH)):
            params = [
                (
                    row.service_id,
                    row.node_id,
                    row.node_class,
                    row.endpoint,
                    Jsonb(list(row.capabilities)),
                    Jsonb(row.metadata),
                    seen_at,
                )
                for row in batch
            ]
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(NAIVE_UPSERT, params)
    return Throughput("baseline INSERT..ON CONFLICT per row", rows, time.perf_counter() - started)


# --- Queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Picks:
    """The capabilities queried, chosen by how many services actually hold them."""

    rare: str
    medium: str
    other: str
    common: str
    share: dict[str, float]

    def label(self, name: str) -> str:
        """A capability with its share of services."""
        return f"{name} {self.share[name]:.2%}"


async def pick_capabilities(url: str, rows: int) -> Picks:
    """Rare (~0.075%), medium (~1.5%), another medium (~0.75%) and common (~25%) ones."""
    async with await connect(url) as conn:
        cur = await conn.execute(CAPABILITY_FREQUENCIES)
        share = {name: count / rows for name, count in await cur.fetchall()}
    rare = closest(share, 0.00075, ())
    medium = closest(share, 0.015, ())
    return Picks(
        rare=rare,
        medium=medium,
        other=closest(share, 0.0075, (medium,)),
        common=closest(share, 0.25, ()),
        share=share,
    )


def closest(share: dict[str, float], target: float, exclude: tuple[str, ...]) -> str:
    """The capability whose share is nearest ``target`` (by ratio)."""
    candidates = [name for name in share if name not in exclude]
    return min(candidates, key=lambda name: abs(math.log(share[name] / target)))


def cases(picks: Picks) -> list[Case]:
    """The first-page queries measured."""
    rare, medium, common = picks.rare, picks.medium, picks.common
    any_of = (rare, medium, picks.other)
    return [
        Case(f"all-of rare ({picks.label(rare)})", all_of=(rare,)),
        Case("  + node_class", all_of=(rare,), by_class=True),
        Case(f"all-of medium ({picks.label(medium)})", all_of=(medium,)),
        Case("  + node_class", all_of=(medium,), by_class=True),
        Case(f"all-of common ({picks.label(common)})", all_of=(common,)),
        Case("  + node_class", all_of=(common,), by_class=True),
        Case(f"any-of {', '.join(any_of)}", any_of=any_of),
        Case(f"all-of {medium}, {common}", all_of=(medium, common)),
    ]


async def measure_case(
    case: Case, service_map: ServiceMap, baseline: Connection, queries: int
) -> Latency:
    """Q first pages of one case from Ronin, then from the baseline."""

    async def ronin_call(iteration: int) -> None:
        await service_map.find(case.service_filter(iteration), limit=PAGE)

    async def baseline_call(iteration: int) -> None:
        statement, params = case.baseline(iteration)
        cur = baseline.cursor(row_factory=dict_row)
        await cur.execute(statement, params, prepare=False)
        await cur.fetchall()

    with gc_pauses() as collections:
        ronin = await timed_calls(ronin_call, queries, CASE_BUDGET_S)
    base = await timed_calls(baseline_call, queries, CASE_BUDGET_S)
    return Latency(case, ronin, base, collections)


@contextmanager
def gc_pauses() -> Iterator[list[float]]:
    """The milliseconds of each garbage collection while the block runs."""
    pauses: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(callback)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(callback)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Where the time of one case's first page goes (means per page unless said)."""

    case: Case
    pages: int
    wall_p50: float
    wall_p99: float
    wall_mean: float
    #: EXPLAIN ANALYZE (TIMING OFF) medians: what PostgreSQL itself spends on a page.
    planning_ms: float
    execution_ms: float
    #: CPU of the pool's PostgreSQL backends (None unless they run on this machine).
    backend_cpu_ms: float | None
    client_cpu_ms: float
    #: Of the client's CPU: rows to Service objects (a fetch of the rows already received).
    decode_ms: float
    bare_p50: float
    checkout_p50: float
    gc: list[float]


async def diagnose(
    case: Case, service_map: ServiceMap, pool: AsyncConnectionPool[Connection], pages: int
) -> Diagnosis:
    """One case's first page taken apart: server (EXPLAIN ANALYZE) against client time, CPU
    on each side, row decoding, the same statement on a bare connection, pool checkout."""
    where = case.service_filter(0)
    planning, execution = [], []
    for _ in range(DIAGNOSIS_EXPLAINS):
        summary = explain_summary(await service_map.plan(where, limit=PAGE, timing=False))
        planning.append(summary["Planning Time"])
        execution.append(summary["Execution Time"])
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        backends = [int(row[0]) for row in await cur.fetchall()]
        statement, params = await service_map._page_query(conn, where, None, PAGE)
    backend_before = backends_cpu_s(backends)
    with gc_pauses() as collections:
        client_before = time.thread_time()
        wall = await timed_calls(lambda _: service_map.find(where, limit=PAGE), pages, 5.0)
        client_s = time.thread_time() - client_before
    backend_after = backends_cpu_s(backends)
    backend_ms = None
    if backend_before is not None and backend_after is not None:
        backend_ms = (backend_after - backend_before) * 1000 / (len(wall) + WARMUP_CALLS)
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=SERVICE_ROW)
        await cur.execute(statement, params, prepare=False)
        started = time.thread_time()
        for _ in range(DIAGNOSIS_EXPLAINS):
            await cur.scroll(0, "absolute")
            await cur.fetchall()
        decode_ms = (time.thread_time() - started) * 1000 / DIAGNOSIS_EXPLAINS

        async def bare_call(_: int) -> None:
            bare = conn.cursor()
            await bare.execute(statement, params, prepare=False)
            await bare.fetchall()

        bare = await timed_calls(bare_call, pages, 5.0)

    async def checkout(_: int) -> None:
        async with pool.connection():
            pass

    checkouts = await timed_calls(checkout, pages, 5.0)
    return Diagnosis(
        case=case,
        pages=len(wall),
        wall_p50=percentile(wall, 0.5),
        wall_p99=percentile(wall, 0.99),
        wall_mean=statistics.fmean(wall),
        planning_ms=statistics.median(planning),
        execution_ms=statistics.median(execution),
        backend_cpu_ms=backend_ms,
        client_cpu_ms=client_s * 1000 / (len(wall) + WARMUP_CALLS),
        decode_ms=decode_ms,
        bare_p50=percentile(bare, 0.5),
        checkout_p50=percentile(checkouts, 0.5),
        gc=collections,
    )


def explain_summary(lines: list[str]) -> dict[str, float]:
    """The "Planning Time: 0.1 ms" lines of a plan, by name."""
    found = {}
    for line in lines:
        name, _, value = line.strip().partition(": ")
        if value.endswith(" ms"):
            found[name] = float(value.removesuffix(" ms"))
    return found


def backends_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds the PostgreSQL backends ``pids`` have used, if they run on this machine."""
    total = 0.0
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                return None
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            return None
    return total


async def measure_count(
    service_map: ServiceMap, baseline: Connection, capability: str, label: str
) -> CountTiming:
    """Ronin's bounded count against an exact count on the baseline (median of a few)."""
    where = ServiceFilter(all_capabilities=(capability,))
    counted = await service_map.count(where)
    ronin_ms = await timed_calls(lambda _: service_map.count(where), COUNT_REPEATS, CASE_BUDGET_S)
    exact = "SELECT count(*) FROM discovered_services WHERE capabilities @> %s"
    params = [Jsonb([capability])]

    async def baseline_call(_: int) -> Any:
        return await (await baseline.execute(exact, params, prepare=False)).fetchone()

    row = await baseline_call(0)
    baseline_ms = await timed_calls(baseline_call, COUNT_REPEATS, CASE_BUDGET_S)
    return CountTiming(
        label=label,
        ronin_value=f"{counted.value:,}" if counted.exact else f">= {counted.value:,}",
        ronin_ms=statistics.median(ronin_ms),
        baseline_value=int(row[0]),
        baseline_ms=statistics.median(baseline_ms),
    )


async def explain(conn: Connection, statement: sql.Composable, params: Any) -> list[str]:
    """EXPLAIN ANALYZE of one statement, indented; run twice so the shown run has warm caches."""
    await conn.execute(EXPLAIN.format(statement), params, prepare=False)
    cur = await conn.execute(EXPLAIN.format(statement), params, prepare=False)
    return [f"    {row[0]}" for row in await cur.fetchall()]


async def ronin_plan(service_map: ServiceMap, where: ServiceFilter) -> list[str]:
    """Ronin's first-page plan, indented; run twice so the shown run has warm caches."""
    await service_map.plan(where, limit=PAGE)
    return [f"    {line}" for line in await service_map.plan(where, limit=PAGE)]


async def plans(
    service_map: ServiceMap, baseline: Connection, medium: str, missed: list[Case]
) -> list[str]:
    """Both sides' plans of the medium capability + class first page; Ronin's of every miss."""
    case = Case("", all_of=(medium,), by_class=True)
    statement, params = case.baseline(0)
    lines = [f"Plan, Ronin first page: {describe(case, 0)}"]
    lines += await ronin_plan(service_map, case.service_filter(0))
    lines.append(f"Plan, baseline first page: {describe(case, 0)}")
    lines += await explain(baseline, statement, params)
    for miss in missed:
        lines.append(f"Plan, Ronin first page that missed its goal: {describe(miss, 0)}")
        lines += await ronin_plan(service_map, miss.service_filter(0))
    return lines


# --- The run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace, server: str, origin: str) -> None:
    """Create (or reuse) the databases, benchmark, print; scratch ones go even on error."""
    say(f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {platform.platform()}")
    say(f"server: {await server_facts(server)} [{origin}]")
    say(f"rows={args.rows:,} queries={args.queries:,} seed={args.seed}")
    async with bench_databases(server, args) as (urls, loaded):
        if not loaded:
            await create_baseline_schema(urls["baseline"], seed_schema_text())
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            urls["ronin"], min_size=STREAMS, max_size=STREAMS, open=False, name="bench"
        )
        await pool.open(wait=True, timeout=30)
        try:
            service_map = ServiceMap(pool, freshness_window=FRESHNESS_WINDOW)
            started = time.perf_counter()
            await benchmark(args, service_map, pool, urls, loaded=loaded)
            say(f"wall time of the benchmark: {time.perf_counter() - started:,.0f} s")
        finally:
            await pool.close()
        if args.keep:
            await mark_loaded(server, urls, args)


def kept_names(keep: str) -> dict[str, str]:
    """The databases ``--keep NAME`` keeps."""
    return {side: f"ronin_bench_map_{keep}_{side}" for side in ("ronin", "baseline")}


def kept_mark(args: argparse.Namespace) -> str:
    """What a kept database says of its contents once loaded (its comment)."""
    return f"bench.map rows={args.rows} seed={args.seed} loaded"


@asynccontextmanager
async def bench_databases(
    server: str, args: argparse.Namespace
) -> AsyncIterator[tuple[dict[str, str], bool]]:
    """The two databases' URLs and whether they are already loaded: scratch ones (dropped on
    the way out), or with ``--keep`` the kept ones, reused when loaded with these rows."""
    if not args.keep:
        async with (
            scratch_database(server, "ronin_bench_map_ronin") as ronin_url,
            scratch_database(server, "ronin_bench_map_baseline", migrated=False) as base_url,
        ):
            yield {"ronin": ronin_url, "baseline": base_url}, False
        return
    names = kept_names(args.keep)
    async with await connect(server) as conn:
        cur = await conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = ANY (%s)",
            [list(names.values())],
        )
        marks = dict(await cur.fetchall())
        loaded = all(marks.get(name) == kept_mark(args) for name in names.values())
        if not loaded:
            for name in names.values():
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                await conn.execute(drop.format(sql.Identifier(name)))
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    urls = {side: make_conninfo(server, dbname=name) for side, name in names.items()}
    if loaded:
        say(f"reusing the loaded databases {', '.join(names.values())} (--keep {args.keep})")
    else:
        say(f"keeping the databases {', '.join(names.values())} (--keep {args.keep})")
        async with await connect(urls["ronin"]) as conn:
            await migrate(conn)
    yield urls, loaded


async def mark_loaded(server: str, urls: dict[str, str], args: argparse.Namespace) -> None:
    """Mark the kept databases as loaded, for the next run with the same NAME to reuse."""
    async with await connect(server) as conn:
        for name in kept_names(args.keep).values():
            comment = sql.SQL("COMMENT ON DATABASE {} IS {}")
            await conn.execute(comment.format(sql.Identifier(name), sql.Literal(kept_mark(args))))


async def benchmark(
    args: argparse.Namespace,
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Connection],
    urls: dict[str, str],
    *,
    loaded: bool,
) -> None:
    """Every phase, in order, then the table."""
    report = Report(queries=args.queries)
    if not loaded:
        await load(args, service_map, urls, report)
    picks = await pick_capabilities(urls["baseline"], args.rows)
    async with await connect(urls["baseline"]) as base:
        for case in cases(picks):
            say(f"querying: {case.label.strip()} ...")
            report.latencies.append(await measure_case(case, service_map, base, args.queries))
        label = f"all-of common ({picks.label(picks.common)})"
        report.counts.append(await measure_count(service_map, base, picks.common, label))
        missed = [
            latency.case
            for latency in report.latencies
            if percentile(latency.ronin, 0.99) >= FIRST_PAGE_GOAL_MS
        ]
        plan_lines = await plans(service_map, base, picks.medium, missed)
    pages = min(args.queries, DIAGNOSIS_PAGES)
    for case in goal_cases(report):
        say(f"diagnosis: {case.label.strip()} ...")
        report.diagnoses.append(await diagnose(case, service_map, pool, pages))
    print()
    print("\n".join(plan_lines))
    print_report(report)


async def load(
    args: argparse.Namespace, service_map: ServiceMap, urls: dict[str, str], report: Report
) -> None:
    """Both databases loaded, each the way it would be, and analysed."""
    rows, seed = args.rows, args.seed
    first_seen = datetime.now(UTC) - timedelta(hours=1)
    say("loading: COPY into baseline ...")
    report.loads.append(await copy_rows(urls["baseline"], seed, rows, first_seen))
    say("loading: Ronin first load ...")
    await ronin_first_load(service_map, seed, rows, first_seen, report)
    say("loading: Ronin re-sighting ...")
    await ronin_resighting(service_map, seed, rows, first_seen + timedelta(minutes=10), report)
    naive_rows = min(NAIVE_MAX_ROWS, rows)
    say(f"loading: naive INSERT .. ON CONFLICT of {naive_rows:,} rows into baseline ...")
    naive = await naive_upserts(
        urls["baseline"], seed, naive_rows, first_seen + timedelta(minutes=20)
    )
    report.loads.append(naive)
    for label, url in urls.items():
        say(f"VACUUM ANALYZE {label}: {await vacuum_analyze(url):.1f} s")


# --- The table -------------------------------------------------------------------------------


def print_report(report: Report) -> None:
    """The final table: loads, first pages, counts, goals, peak RSS."""
    print()
    if report.loads:
        copy_rate = report.loads[0].rate
        print(f"{'load':<40}{'rows':>11}{'seconds':>10}{'rows/s':>11}{'x COPY':>9}")
        for load in report.loads:
            print(
                f"{load.label:<40}{load.rows:>11,}{load.seconds:>10.1f}"
                f"{load.rate:>11,.0f}{load.rate / copy_rate:>9.2f}"
            )
    else:
        print("load: not measured (kept databases reused)")
    print()
    head = f"{'first page, limit 100 (ms)':<40}{'ronin p50':>10}{'p99':>8}{'n':>6}"
    print(f"{head}{'base p50':>10}{'p99':>9}{'n':>6}{'base/ronin p50':>16}{'p99':>8}")
    for latency in report.latencies:
        print(latency_line(latency))
    if any(min(len(x.ronin), len(x.baseline)) < report.queries for x in report.latencies):
        print(
            f"(n < {report.queries:,}: that side of the case stopped at its"
            f" {CASE_BUDGET_S:.0f} s budget)"
        )
    print()
    print(f"{'count (median ms)':<40}{'ronin':>14}{'ms':>8}{'base exact':>14}{'ms':>9}")
    for count in report.counts:
        print(
            f"{count.label:<40}{count.ronin_value:>14}{count.ronin_ms:>8.2f}"
            f"{count.baseline_value:>14,}{count.baseline_ms:>9.2f}"
        )
    print()
    for line in goal_lines(report):
        print(line)
    for line in diagnosis_lines(report):
        print(line)
    for note in report.notes:
        print(f"NOTE {note}")
    print(f"peak RSS of the benchmark process: {peak_rss_mib():,.0f} MiB")


def latency_line(latency: Latency) -> str:
    """One row of the first-page table."""
    r50, r99 = percentile(latency.ronin, 0.5), percentile(latency.ronin, 0.99)
    b50, b99 = percentile(latency.baseline, 0.5), percentile(latency.baseline, 0.99)
    return (
        f"{latency.case.label[:39]:<40}{r50:>10.2f}{r99:>8.2f}{len(latency.ronin):>6}"
        f"{b50:>10.2f}{b99:>9.2f}{len(latency.baseline):>6}{b50 / r50:>16.1f}{b99 / r99:>8.1f}"
    )


def goal_lines(report: Report) -> list[str]:
    """PASS or MISS for every goal."""
    lines = []
    if report.loads:
        copy_rate = report.loads[0].rate
        ratio = report.load("ronin re-sighting, 2 streams").rate / copy_rate
        goal = f"re-sighting {ratio:.2f}x COPY (goal >= 0.5x)"
        lines.append(verdict_line(ratio >= RESIGHT_GOAL, goal))
    for latency in report.latencies:
        p99 = percentile(latency.ronin, 0.99)
        goal = f"first page p99 {p99:.2f} ms (goal < 10 ms): {describe(latency.case)}"
        lines.append(verdict_line(p99 < FIRST_PAGE_GOAL_MS, goal))
    return lines


def goal_cases(report: Report) -> list[Case]:
    """The cases of the issue's goal: the any-of and the all-of of several capabilities."""
    return [x.case for x in report.latencies if x.case.any_of or len(x.case.all_of) > 1]


def diagnosis_lines(report: Report) -> list[str]:
    """Where a goal case's page time goes: PostgreSQL's own time (EXPLAIN ANALYZE), the CPU
    of each side per page, and what is left (waiting for a CPU: the machine's other work)."""
    lines = []
    for d in report.diagnoses:
        collections = next(x.ronin_gc for x in report.latencies if x.case == d.case)
        server = d.planning_ms + d.execution_ms
        lines.append(
            f"DIAGNOSIS {describe(d.case)}: {d.pages} pages, wall p50 {d.wall_p50:.2f}"
            f" p99 {d.wall_p99:.2f} mean {d.wall_mean:.2f} ms; in PostgreSQL (EXPLAIN ANALYZE,"
            f" TIMING OFF, median) planning {d.planning_ms:.2f} + execution"
            f" {d.execution_ms:.2f} = {server:.2f} ms"
        )
        if d.backend_cpu_ms is not None:
            waiting = d.wall_mean - d.backend_cpu_ms - d.client_cpu_ms
            cpu = (
                f"CPU per page: PostgreSQL backend {d.backend_cpu_ms:.2f} ms, this process"
                f" {d.client_cpu_ms:.2f} ms; neither running (round trips, waiting for a CPU)"
                f" {waiting:.2f} ms"
            )
        else:
            cpu = f"CPU per page: this process {d.client_cpu_ms:.2f} ms (backend not local)"
        lines.append(
            f"  {cpu}; of this process's, rows to Services {d.decode_ms:.2f} ms; same"
            f" statement on a bare connection (tuples) p50 {d.bare_p50:.2f} ms; pool checkout"
            f" p50 {d.checkout_p50:.3f} ms; GC during the case's {len(report.queries_of(d.case))}"
            f" pages: {len(collections)} collections, longest"
            f" {max(collections, default=0.0):.2f} ms"
        )
    return lines


def describe(case: Case, iteration: int | None = None) -> str:
    """A case in full; its class filter as of ``iteration``, or as rotating."""
    parts = []
    if case.all_of:
        parts.append(f"all-of {', '.join(case.all_of)}")
    if case.any_of:
        parts.append(f"any-of {', '.join(case.any_of)}")
    if case.by_class and iteration is None:
        parts.append("node_class rotating")
    elif case.by_class and iteration is not None:
        parts.append(f"node_class {case.node_class(iteration)}")
    return " + ".join(parts)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """--rows, --queries, --seed, --keep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="services (1,000,000)")
    parser.add_argument("--queries", type=int, default=1_000, help="queries per case (1,000)")
    parser.add_argument("--seed", type=int, default=1, help="RNG seed (1)")
    parser.add_argument(
        "--keep",
        metavar="NAME",
        help="keep the databases under NAME; reuse them, loaded, on the next run with NAME",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.queries < 1:
        parser.error("--rows and --queries must be at least 1")
    if args.keep is not None and not re.fullmatch(r"[a-z0-9_]{1,20}", args.keep):
        parser.error("--keep NAME: 1 to 20 of a-z, 0-9 and _")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.keep and not os.environ.get("RONIN_DATABASE_URL"):
        server, origin = start_embedded(KEPT_DATA_DIR), f"embedded, kept in {KEPT_DATA_DIR}"
    else:
        server, origin = server_url("map")
    asyncio.run(run(args, server, origin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
