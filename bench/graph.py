"""Benchmark ``GET /v1/graph``: the dashboard's snapshot of the map as nodes and peer links.

Usage: ``python -m bench.graph [--quick] [--nodes N ...]`` from the repository root.

For each size, a scratch database (on ``RONIN_DATABASE_URL``, or an embedded server of the
benchmark's own) is seeded with N nodes of one to three services each (classes in turn, a
few capabilities, about 5% suspect and 5% gone) and 2N random peer links, analysed, and the
app is called in-process (httpx over ASGI: no socket, no server process). Timed: the first
request (which places and stores every node's position), then the median of warm ones, and
a filtered one (one class). The goal: a warm graph of 10,000 nodes in under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import httpx

from bench.harness import connect, say, scratch_database, server_url, verdict_line
from ronin.api.app import create_app
from ronin.config import Settings
from ronin.kos import CANONICAL_CLASSES
from ronin.store.database import open_pool

WARM_RUNS = 5
GOAL_MS = 500.0
CAPABILITIES = ("klf", "story.tell", "music.play", "heal", "count", "teach")


async def seed(url: str, nodes: int, rng: random.Random) -> int:
    """N nodes, their services and liveness, 2N links; how many services."""
    services: list[tuple[str, str, str, str, str]] = []
    for n in range(nodes):
        node_class = CANONICAL_CLASSES[n % len(CANONICAL_CLASSES)]
        node_id = f"did:kos:{node_class.lower()}:{n:06x}"
        for s in range(rng.randint(1, 3)):
            caps = rng.sample(CAPABILITIES, rng.randint(1, 3))
            services.append(
                (
                    f"{node_id}#svc{s}",
                    node_id,
                    node_class,
                    f"http://10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:30437/{s}",
                    '["' + '","'.join(caps) + '"]',
                )
            )
    ids = sorted({s[1] for s in services})
    links = set()
    while len(links) < 2 * nodes:
        a, b = rng.sample(ids, 2)
        links.add((a, b))
    async with await connect(url) as conn:
        async with (
            conn.cursor() as cur,
            cur.copy(
                "COPY discovered_services (service_id, node_id, node_class, endpoint, capabilities,"
                " discovery_metadata, last_seen) FROM STDIN"
            ) as copy,
        ):
            for row in services:
                await copy.write_row((*row, "{}", "now"))
        await conn.execute(
            "UPDATE service_liveness SET state = CASE WHEN random() < 0.05 THEN 'suspect' "
            "WHEN random() < 0.05 THEN 'gone' ELSE 'alive' END"
        )
        async with (
            conn.cursor() as cur,
            cur.copy("COPY node_links (source_node, target_node, job_id) FROM STDIN") as copy,
        ):
            for a, b in sorted(links):
                await copy.write_row((a, b, "00000000-0000-4000-8000-000000000001"))
        await conn.execute("VACUUM ANALYZE")
    return len(services)


async def measure(server: str, nodes: int) -> dict[str, Any]:
    async with scratch_database(server, "ronin_bench_graph") as url:
        services = await seed(url, nodes, random.Random(nodes))
        settings = Settings(database_url=url, allow="127.0.0.0/8", api_cache_s=0)
        database = await open_pool(url, settings)
        try:
            app = create_app(settings, database)
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://ronin.bench") as client,
            ):

                async def timed(params: dict[str, str] | None = None) -> tuple[float, int]:
                    start = time.perf_counter()
                    answer = await client.get("/v1/graph", params=params)
                    elapsed = (time.perf_counter() - start) * 1000
                    answer.raise_for_status()
                    return elapsed, len(answer.content)

                first, _ = await timed()
                warm = [await timed() for _ in range(WARM_RUNS)]
                one_class, _ = await timed({"node_class": "Griot"})
        finally:
            await database.close()
    return {
        "nodes": nodes,
        "services": services,
        "links": 2 * nodes,
        "first_ms": first,
        "warm_ms": statistics.median(ms for ms, _ in warm),
        "bytes": warm[0][1],
        "class_ms": one_class,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes only")
    parser.add_argument("--nodes", type=int, nargs="*", default=None)
    args = parser.parse_args()
    sizes = args.nodes or ([1000] if args.quick else [1000, 10_000])
    server, origin = server_url("graph")
    say(f"GET /v1/graph, in-process, PostgreSQL from {origin}")
    results = [await measure(server, n) for n in sizes]
    for r in results:
        say(
            f"  {r['nodes']:>6,} nodes, {r['services']:>6,} services, {r['links']:>6,} links: "
            f"first (placing every node) {r['first_ms']:7.1f} ms, warm {r['warm_ms']:7.1f} ms "
            f"(median of {WARM_RUNS}, {r['bytes'] / 1e6:.2f} MB), one class {r['class_ms']:6.1f} ms"
        )
    biggest = results[-1]
    say(
        verdict_line(
            biggest["warm_ms"] < GOAL_MS,
            f"a warm graph of {biggest['nodes']:,} nodes under {GOAL_MS:.0f} ms",
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
