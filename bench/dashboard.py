"""Benchmark the dashboard's network page in headless Chromium: time to interactive, first
frame, frames per second while panning, and the size of Ronin's own JavaScript.

Usage: ``python -m bench.dashboard [--quick]`` from the repository root.

For 1,000 and then 10,000 nodes (``--quick``: 1,000 only), a scratch database on
``RONIN_DATABASE_URL`` (or on an embedded server of the benchmark's own) is filled by SQL: two
services a node (``main`` and ``status``), 13 classes in turn, one node in 40 ``gone``, one in
40 ``suspect`` and one in 40 ``unverified``, and twice as many peer links as nodes (each node
names the next one and one further away). ``ronin serve --workers 0`` serves it; Debian's
``/usr/bin/chromium``, driven by Playwright with the browser tests' flags (WebGL in software),
opens ``/network`` in a fresh context (empty cache) each time:

- the first load, when the server places every node (``node_layout`` is empty: positions are
  computed once, on the first request that sees a node), then 3 warm loads (``--quick``: 2);
- time to interactive (``window.roninGraph.readyMs``, when ``body[data-ready="1"]`` is set) and
  to the first drawn frame (``firstFrameMs``: sigma's constructor draws synchronously), both
  ``performance.now()`` from navigation start, and when the page had received ``/v1/graph``
  (Resource Timing); for scale, ``GET /v1/graph`` alone (its time and gzipped size);
- frames per second while panning: the camera of the page's sigma renderer
  (``window.roninGraph.renderer``) moved on every animation frame for 3 s, frames counted by
  ``requestAnimationFrame``; if the page does not expose its renderer, the mouse drags the
  canvas instead (said in the output). For scale, the software renderer's ceiling is measured
  too: 1 and 3 stacked viewport-sized WebGL canvases (sigma stacks 3) cleared every frame.

Ronin's own JavaScript is ``ronin/api/static/dashboard/*.js``, gzipped (level 6) one file at
a time, summed; the vendored libraries are printed beside it, with no goal. Goals: 10,000 nodes
interactive in under 3 s (warm median), panning at 30 frames per second or more, Ronin's own
JavaScript under 100 kB gzipped. The command exits 0 whether or not a goal is met and prints
PASS or MISS for each; it fails (exit 1) if a step could not run (no Chromium, a page that never
becomes ready, a page that draws fewer nodes than the map holds).
"""

from __future__ import annotations

import argparse
import gzip
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.api_support import server_process
from bench.harness import (
    ROOT,
    BenchError,
    connect,
    fetch_value,
    load_average,
    ronin_env,
    run_benchmark,
    say,
    scratch_database,
    server_facts,
    server_url,
    verdict_line,
)
from tests.support.chromium import CHROMIUM, LAUNCH_ARGS, VIEWPORT

FULL_SIZES = (1_000, 10_000)
QUICK_SIZES = (1_000,)
WARM_LOADS, QUICK_WARM_LOADS = 3, 2
PAN_S, QUICK_PAN_S = 3.0, 1.5
READY_TIMEOUT_MS = 120_000
GOAL_INTERACTIVE_S = 3.0
GOAL_INTERACTIVE_NODES = 10_000
GOAL_FPS = 30.0
GOAL_OWN_JS_KB = 100.0
CLASSES = [
    "Griot", "Tohunga", "Ronin", "Musa", "Hakim", "Skald", "Oracle",
    "Junzi", "Yachay", "Sachem", "Archon", "Amauta", "Mzee",
]  # fmt: skip
DASHBOARD_JS = ROOT / "ronin" / "api" / "static" / "dashboard"
VENDOR = ROOT / "ronin" / "api" / "static" / "vendor"

#: Node n of the map: its id, from its class and number (the links are written the same way).
NODE_ID = "format('did:kos:%%s:bench%%s', lower((%(classes)s::text[])[1 + {n} %% 13]), {n})"
FILL_SERVICES = f"""
INSERT INTO discovered_services
    (service_id, node_id, node_class, endpoint, capabilities, discovery_metadata, last_seen)
SELECT format('did:kos:service:bench%%s:%%s', n, s.kind),
       {NODE_ID.format(n="n")},
       (%(classes)s::text[])[1 + n %% 13],
       format('http://10.%%s.%%s.%%s:30437/klf', (n >> 16) & 255, (n >> 8) & 255, n & 255),
       CASE s.kind WHEN 'main'
           THEN jsonb_build_array(lower((%(classes)s::text[])[1 + n %% 13]) || '_work',
                                  'cap_' || (n %% 20))
           ELSE '["node_status"]'::jsonb END,
       '{{"discovery_method": "http-api"}}'::jsonb,
       now()
FROM generate_series(0, %(nodes)s - 1) AS n
CROSS JOIN (VALUES ('main'), ('status')) AS s(kind)
"""
FILL_STATES = """
INSERT INTO service_liveness (service_id, state)
SELECT format('did:kos:service:bench%%s:%%s', n, s.kind),
       (ARRAY['gone', 'suspect', 'unverified'])[1 + n %% 40]
FROM generate_series(0, %(nodes)s - 1) AS n
CROSS JOIN (VALUES ('main'), ('status')) AS s(kind)
WHERE n %% 40 < 3
ON CONFLICT (service_id) DO UPDATE SET state = EXCLUDED.state, state_since = now()
"""
#: Node n names n + 1 and n * 7 + 13 (mod the size): a ring and chords across it.
FILL_LINKS = f"""
INSERT INTO node_links (source_node, target_node)
SELECT {NODE_ID.format(n="n")}, {NODE_ID.format(n="t.target")}
FROM generate_series(0, %(nodes)s - 1) AS n
CROSS JOIN LATERAL (VALUES ((n + 1) %% %(nodes)s), ((n * 7 + 13) %% %(nodes)s)) AS t(target)
WHERE t.target <> n
ON CONFLICT DO NOTHING
"""

#: Pan the renderer's camera on every animation frame for ``durationMs``; count the frames.
PAN_CAMERA = """
async (durationMs) => {
  const graph = window.roninGraph;
  const renderer = graph && (graph.renderer || graph.sigma);
  if (!renderer || typeof renderer.getCamera !== 'function') return null;
  const camera = renderer.getCamera();
  const start = camera.getState();
  return await new Promise((resolve) => {
    let frames = 0, worst = 0, t0 = null, last = null;
    function step(now) {
      if (t0 === null) { t0 = last = now; }
      frames += 1; worst = Math.max(worst, now - last); last = now;
      const t = (now - t0) / 1000;
      camera.setState({x: start.x + 0.15 * Math.sin(2 * t), y: start.y + 0.15 * Math.cos(2 * t)});
      if (now - t0 < durationMs) { requestAnimationFrame(step); return; }
      camera.setState(start);
      resolve({frames: frames - 1, elapsedMs: now - t0, worstMs: worst,
               webgl: Object.keys(renderer.webGLContexts || {}).join(' ')});
    }
    requestAnimationFrame(step);
  });
}
"""
COUNT_FRAMES = """
() => { window.__benchFrames = {frames: 0, worst: 0, t0: null, last: null, on: true};
  const f = window.__benchFrames;
  function step(now) {
    if (f.t0 === null) { f.t0 = f.last = now; }
    f.frames += 1; f.worst = Math.max(f.worst, now - f.last); f.last = now;
    if (f.on) requestAnimationFrame(step);
  }
  requestAnimationFrame(step); }
"""
STOP_FRAMES = """
() => { const f = window.__benchFrames; f.on = false;
  return {frames: f.frames - 1, elapsedMs: f.last - f.t0, worstMs: f.worst}; }
"""

#: The software renderer's ceiling: ``count`` viewport-sized WebGL canvases stacked, each
#: cleared every frame (sigma stacks three: edges, nodes, hovered nodes), nothing drawn.
CEILING_PAGE = """<!doctype html><body style="margin:0">{canvases}<script>
const gls = [...document.querySelectorAll('canvas')].map((c) => c.getContext('webgl'));
window.run = (ms) => new Promise((resolve) => {{ let n = 0, t0 = null;
  function step(now) {{ if (t0 === null) t0 = now; n += 1;
    gls.forEach((g, i) => {{ g.clearColor(Math.random(), 0.5, 0.5, i ? 0 : 1);
                              g.clear(g.COLOR_BUFFER_BIT); }});
    if (now - t0 < ms) requestAnimationFrame(step); else resolve((n - 1) / ((now - t0) / 1000));
  }}
  requestAnimationFrame(step); }});
</script></body>"""
CANVAS = '<canvas width={width} height={height} style="position:absolute;left:0;top:0"></canvas>'


@dataclass
class Load:
    """One load of the network page."""

    ready_ms: float
    first_frame_ms: float
    nodes: int
    links: int
    #: When the page had received /v1/graph (Resource Timing's responseEnd).
    graph_ms: float


@dataclass
class SizeResult:
    """What one map size measured."""

    nodes: int
    links: int
    cold: Load | None = None
    warm: list[Load] = field(default_factory=list)
    fps: float = 0.0
    worst_frame_ms: float = 0.0
    pan_method: str = ""
    graph_ms: float = 0.0
    graph_gz_kb: float = 0.0

    @property
    def warm_ready_s(self) -> float:
        return statistics.median(load.ready_ms for load in self.warm) / 1000

    @property
    def warm_first_frame_s(self) -> float:
        return statistics.median(load.first_frame_ms for load in self.warm) / 1000


def gz_kb(path: Path) -> float:
    """A file's gzipped size (level 6, as a web server would send it), in kB."""
    return len(gzip.compress(path.read_bytes(), compresslevel=6)) / 1000


def javascript_sizes() -> tuple[dict[str, float], dict[str, float]]:
    """Gzipped kB of Ronin's own scripts and of the vendored ones, by file name."""
    own = {p.name: gz_kb(p) for p in sorted(DASHBOARD_JS.glob("*.js"))}
    vendored = {str(p.relative_to(VENDOR)): gz_kb(p) for p in sorted(VENDOR.rglob("*.js"))}
    return own, vendored


async def fill(url: str, nodes: int) -> int:
    """Fill the map by SQL: services, states and links; returns the links written."""
    params = {"nodes": nodes, "classes": CLASSES}
    async with await connect(url) as conn:
        exists = await (await conn.execute("SELECT to_regclass('node_links')")).fetchone()
        if exists is None or exists[0] is None:
            raise BenchError("no node_links table: the peer links migration (0006) is missing")
        async with conn.transaction():
            await conn.execute(FILL_SERVICES, params)
            await conn.execute(FILL_STATES, params)
            await conn.execute(FILL_LINKS, params)
        await conn.execute("VACUUM ANALYZE")
    links: int = await fetch_value(url, "SELECT count(*) FROM node_links")
    return links


async def load_network(browser: Any, base: str) -> Load:
    """Open /network in a fresh context; wait until it is interactive; read its timings."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{base}/network")
        try:
            await page.wait_for_selector(
                'body[data-ready="1"]', state="attached", timeout=READY_TIMEOUT_MS
            )
        except Exception as exc:
            raise BenchError(f"/network never became ready ({exc}); page errors: {errors}") from exc
        graph = await page.evaluate(
            "() => { const g = window.roninGraph || {}; const json = performance"
            ".getEntriesByType('resource').find((e) => new URL(e.name).pathname === '/v1/graph');"
            " return {readyMs: g.readyMs, firstFrameMs: g.firstFrameMs, nodes: g.nodes,"
            " links: g.links, graphMs: json ? json.responseEnd : null}; }"
        )
        if graph["readyMs"] is None or graph["firstFrameMs"] is None:
            raise BenchError(f"window.roninGraph has no readyMs/firstFrameMs: {graph}")
        return Load(
            float(graph["readyMs"]),
            float(graph["firstFrameMs"]),
            int(graph["nodes"] or 0),
            int(graph["links"] or 0),
            float(graph["graphMs"] or 0.0),
        )
    finally:
        await context.close()


async def pan(browser: Any, base: str, seconds: float) -> tuple[float, float, str]:
    """Frames per second while panning, the longest frame (ms), and how the page was panned."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        await page.goto(f"{base}/network")
        await page.wait_for_selector(
            'body[data-ready="1"]', state="attached", timeout=READY_TIMEOUT_MS
        )
        await page.wait_for_timeout(500)  # let the first frames and the event stream settle
        # As a user pans: dragging the canvas with the mouse (sigma knows the picture is moving,
        # so a large one hides its links meanwhile, as the page asks).
        method = "the canvas dragged with the mouse"
        counted = await drag(page, seconds)
        fps = counted["frames"] / (counted["elapsedMs"] / 1000) if counted["elapsedMs"] else 0.0
        return fps, float(counted["worstMs"]), method
    finally:
        await context.close()


async def drag(page: Any, seconds: float) -> dict[str, float]:
    """Drag the graph's canvas around for ``seconds`` while the page counts frames."""
    box = None
    for selector in ("#graph canvas", "canvas"):
        handle = await page.query_selector(selector)
        if handle is not None and (box := await handle.bounding_box()):
            break
    if not box:
        raise BenchError("no canvas on /network to pan")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.evaluate(COUNT_FRAMES)
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    started = time.monotonic()
    step = 0
    while time.monotonic() - started < seconds:
        step += 1
        await page.mouse.move(cx + 120 * ((step % 40) / 40 - 0.5), cy + 60 * ((step % 20) / 20))
    await page.mouse.up()
    counted: dict[str, float] = await page.evaluate(STOP_FRAMES)
    return counted


async def ceiling(browser: Any, seconds: float) -> dict[int, float]:
    """Frames per second of 1 and of 3 stacked WebGL canvases cleared every frame."""
    rates: dict[int, float] = {}
    for count in (1, 3):
        page = await browser.new_page(viewport=VIEWPORT)
        try:
            canvas = CANVAS.format(width=VIEWPORT["width"], height=VIEWPORT["height"])
            await page.set_content(CEILING_PAGE.format(canvases=canvas * count))
            rates[count] = float(await page.evaluate("(ms) => window.run(ms)", seconds * 1000))
        finally:
            await page.close()
    return rates


async def graph_alone(base: str) -> tuple[float, float]:
    """``GET /v1/graph`` once, warm: its time (ms) and gzipped size (kB)."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        answer = await client.get("/v1/graph")
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
    return elapsed, len(gzip.compress(answer.content, compresslevel=6)) / 1000


async def measure(
    server: str, browser: Any, nodes: int, warm_loads: int, pan_s: float, logs: Path
) -> SizeResult:
    """One map size: fill, serve, load the page cold and warm, pan."""
    async with scratch_database(server, "ronin_bench_dashboard") as url:
        say(f"\n{nodes:,} nodes: filling the map by SQL ...")
        started = time.monotonic()
        links = await fill(url, nodes)
        result = SizeResult(nodes, links)
        say(f"  {2 * nodes:,} services, {links:,} links in {time.monotonic() - started:.1f} s")
        command = [sys.executable, "-m", "ronin", "serve", "--workers", "0"]
        command += ["--host", "127.0.0.1", "--port", "0"]
        env = ronin_env(url)
        log = logs / f"serve-{nodes}.log"
        async with server_process("ronin serve", command, env, log, None) as served:
            base = f"http://127.0.0.1:{served.port}"
            result.cold = await load_network(browser, base)
            say(
                f"  first load (positions placed): interactive {result.cold.ready_ms:,.0f} ms,"
                f" first frame {result.cold.first_frame_ms:,.0f} ms (/v1/graph received at"
                f" {result.cold.graph_ms:,.0f} ms),"
                f" {result.cold.nodes:,} nodes and {result.cold.links:,} links drawn"
            )
            if result.cold.nodes != nodes:
                raise BenchError(f"the page drew {result.cold.nodes:,} nodes of {nodes:,}")
            for index in range(warm_loads):
                load = await load_network(browser, base)
                result.warm.append(load)
                say(
                    f"  warm load {index + 1}: interactive {load.ready_ms:,.0f} ms,"
                    f" first frame {load.first_frame_ms:,.0f} ms (/v1/graph received at"
                    f" {load.graph_ms:,.0f} ms)"
                )
            result.graph_ms, result.graph_gz_kb = await graph_alone(base)
            say(
                f"  GET /v1/graph alone: {result.graph_ms:,.0f} ms, {result.graph_gz_kb:,.0f} kB gz"
            )
            result.fps, result.worst_frame_ms, result.pan_method = await pan(browser, base, pan_s)
            say(
                f"  panning {pan_s:.1f} s ({result.pan_method}): {result.fps:.1f} frames/s,"
                f" longest frame {result.worst_frame_ms:.0f} ms"
            )
    return result


async def run(quick: bool) -> None:
    """Every size, then the verdicts."""
    from playwright.async_api import async_playwright

    server, origin = server_url("dashboard")
    python = sys.version.split()[0]
    say(f"bench.dashboard on {platform.node()} ({platform.machine()}), Python {python}")
    say(f"server: {origin}, {await server_facts(server)}; {load_average()}")
    sizes = QUICK_SIZES if quick else FULL_SIZES
    warm = QUICK_WARM_LOADS if quick else WARM_LOADS
    pan_s = QUICK_PAN_S if quick else PAN_S
    own, vendored = javascript_sizes()
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ronin-bench-dashboard-") as logs:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
            )
            say(f"browser: Chromium {browser.version} (SwiftShader WebGL), headless")
            try:
                rates = await ceiling(browser, pan_s)
                say(
                    f"software WebGL ceiling at {VIEWPORT['width']}x{VIEWPORT['height']}, a"
                    f" canvas cleared every frame: 1 canvas {rates[1]:.1f} frames/s,"
                    f" 3 stacked (as sigma draws) {rates[3]:.1f} frames/s"
                )
                for nodes in sizes:
                    results.append(await measure(server, browser, nodes, warm, pan_s, Path(logs)))
            finally:
                await browser.close()
    report(results, own, vendored, quick, rates)
    say(f"\nwall time: {time.monotonic() - started:.0f} s; {load_average()}")


def report(
    results: list[SizeResult],
    own: dict[str, float],
    vendored: dict[str, float],
    quick: bool,
    rates: dict[int, float],
) -> None:
    """The figures, each next to its goal."""
    say("\n== results")
    for result in results:
        assert result.cold is not None
        say(
            f"{result.nodes:,} nodes, {result.links:,} links: first load interactive"
            f" {result.cold.ready_ms / 1000:.2f} s (first frame"
            f" {result.cold.first_frame_ms / 1000:.2f} s); warm median interactive"
            f" {result.warm_ready_s:.2f} s (first frame {result.warm_first_frame_s:.2f} s);"
            f" panning {result.fps:.1f} frames/s"
        )
    for result in results:
        scope = "" if result.nodes == GOAL_INTERACTIVE_NODES else " (the goal is for 10,000)"
        say(
            verdict_line(
                result.warm_ready_s < GOAL_INTERACTIVE_S,
                f"{result.nodes:,} nodes interactive in {result.warm_ready_s:.2f} s (warm median;"
                f" goal < {GOAL_INTERACTIVE_S:.0f} s{scope})",
            )
        )
        say(
            verdict_line(
                result.cold is not None and result.cold.ready_ms / 1000 < GOAL_INTERACTIVE_S,
                f"{result.nodes:,} nodes interactive on the first load, placing every node:"
                f" {result.cold.ready_ms / 1000 if result.cold else 0:.2f} s"
                f" (goal < {GOAL_INTERACTIVE_S:.0f} s{scope})",
            )
        )
        say(
            verdict_line(
                result.fps >= GOAL_FPS,
                f"{result.nodes:,} nodes panning at {result.fps:.1f} frames/s"
                f" (goal >= {GOAL_FPS:.0f})",
            )
        )
    say(
        f"     panning's ceiling here: 3 stacked WebGL canvases doing nothing run at"
        f" {rates[3]:.1f} frames/s (1 canvas: {rates[1]:.1f}) in software"
    )
    total = sum(own.values())
    files = ", ".join(f"{name} {kb:.1f}" for name, kb in own.items()) or "none found"
    say(
        verdict_line(
            bool(own) and total < GOAL_OWN_JS_KB,
            f"Ronin's own JavaScript {total:.1f} kB gzipped ({files};"
            f" goal < {GOAL_OWN_JS_KB:.0f} kB)",
        )
    )
    libraries = ", ".join(f"{name} {kb:.1f}" for name, kb in vendored.items()) or "none"
    say(f"     vendored libraries, no goal: {sum(vendored.values()):.1f} kB gzipped ({libraries})")
    if quick:
        say("     --quick: 1,000 nodes only; the 10,000-node goal is judged by a full run")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes only (what CI runs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 1
    return run_benchmark(run(bool(args.quick)), psycopg.Error, OSError, httpx.HTTPError)


if __name__ == "__main__":
    sys.exit(main())
