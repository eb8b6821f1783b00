"""The dashboard in a real browser: ``ronin serve`` as a process, a beacon fleet on loopback,
Debian's Chromium (see conftest.py). No test reloads a page to see a change: each marks the
window once loaded and checks the mark is still there at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from ronin.beacon import KOS_PORT
from tests.acceptance.serve_support import Process
from tests.browser.conftest import BrowserLog, wait_ready
from tests.browser.fleet import FleetThread

FLEET_SIZE = 5
READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
TOKENS = f"read:{READ},write:{WRITE}"
#: The longest a job or a state change may take to show (a bound, not a measurement).
CHANGE_TIMEOUT_MS = 30_000
#: Every script given to the page is a function: the pages' Content-Security-Policy has no
#: 'unsafe-eval', so Playwright could not evaluate a bare expression in them.
MARK = "() => { window.__notReloaded = true; }"
NOT_RELOADED = "() => window.__notReloaded === true"

Serve = Callable[..., Process]
Screenshot = Callable[[Any, str], Path]


def cidr_job(network: str) -> dict[str, Any]:
    return {
        "target": {"type": "network_cidr", "value": network},
        "protocols": ["http-api"],
        "ports": [KOS_PORT],
        # Depth 2: every node is found at level 1, and level 2 links each to the peer it names
        # whatever the order the scan fetched them in.
        "depth": 2,
    }


def discover(node: Process, network: str, **headers: str) -> str:
    """Run a discovery of ``network`` through the node's API; its job id once completed."""
    with httpx.Client(base_url=node.url, timeout=30, headers=headers) as client:
        answer = client.post("/v1/jobs", json=cidr_job(network))
        assert answer.status_code == 202, answer.text
        job_id = str(answer.json()["job_id"])
        deadline = time.monotonic() + CHANGE_TIMEOUT_MS / 1000
        while (status := client.get(f"/v1/jobs/{job_id}").json()["status"]) != "completed":
            assert status in ("pending", "running"), f"job {status}:\n{node.log()}"
            assert time.monotonic() < deadline, f"job still {status}:\n{node.log()}"
            time.sleep(0.1)
    return job_id


def node_path(node_id: str) -> str:
    return f"/nodes/{quote(node_id, safe='')}"


def open_ready(page: Any, url: str) -> None:
    page.goto(url)
    wait_ready(page)


def test_every_page_loads_ready_with_no_console_error(
    page: Any, served_node: Serve, screenshot: Screenshot
) -> None:
    network = "127.78.1.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT) as fleet:
        node = served_node("--workers", "1", RONIN_ALLOW=network, RONIN_VERIFY_INTERVAL_S="0")
        job_id = discover(node, network)
        pages = {
            "overview": "/",
            "network": "/network",
            "services": "/services",
            "node": node_path(fleet.fleet[0].node_id),
            "jobs": "/jobs",
            "job": f"/jobs/{job_id}",
        }
        for name, path in pages.items():
            open_ready(page, node.url + path)
            assert page.title(), name
            screenshot(page, name)
        # A narrow window: long DIDs and endpoints wrap, no page is wider than the window.
        page.set_viewport_size({"width": 800, "height": 900})
        for name, path in pages.items():
            open_ready(page, node.url + path)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 800, (name, width)
        # The node page is the fleet's first node's, with its peers both ways (a ring).
        open_ready(page, node.url + pages["node"])
        assert fleet.fleet[0].node_id in page.inner_text("h1")
        assert fleet.fleet[1].node_id in page.inner_text("#refers-to")
        assert fleet.fleet[-1].node_id in page.inner_text("#referred-by")


def test_the_network_page_draws_the_fleet(
    page: Any, served_node: Serve, screenshot: Screenshot
) -> None:
    network = "127.78.2.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT) as fleet:
        node = served_node("--workers", "1", RONIN_ALLOW=network, RONIN_VERIFY_INTERVAL_S="0")
        discover(node, network)
        open_ready(page, f"{node.url}/network")
        graph = page.evaluate("() => ({nodes: roninGraph.nodes, links: roninGraph.links})")
        # Every node names the next one: the ring has as many links as nodes.
        assert graph == {"nodes": FLEET_SIZE, "links": FLEET_SIZE}
        summary = page.inner_text("#graph-summary")
        assert summary.startswith(f"{FLEET_SIZE} nodes, {FLEET_SIZE} links, 0 gone"), summary
        for beacon in fleet.fleet:
            assert page.evaluate("(id) => roninGraph.state(id)", beacon.node_id) == "alive"
        assert page.evaluate("() => roninGraph.firstFrameMs <= roninGraph.readyMs")
        screenshot(page, "network")


def test_a_discovery_started_from_the_form_shows_its_progress_to_completion(
    page: Any, served_node: Serve, screenshot: Screenshot
) -> None:
    network = "127.78.3.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT):
        # No job slot in the node the browser talks to: the job waits, pending, until a second
        # node (a worker) is started once the job's page is open, so the page must follow it.
        node = served_node("--workers", "0", RONIN_ALLOW=network)
        open_ready(page, f"{node.url}/jobs")
        page.select_option("#j-type", "network_cidr")
        page.fill("#j-target", network)
        with page.expect_navigation():
            page.click("#start-form button[type=submit]")
        assert urlsplit(page.url).path.startswith("/jobs/"), page.url
        wait_ready(page)
        status = page.locator("#job-status .progress")
        assert status.get_attribute("data-status") == "pending"
        page.evaluate(MARK)
        page.evaluate(
            """() => { window.__seen = [];
            const text = document.querySelector('#job-status');
            new MutationObserver(() => window.__seen.push(text.innerText.trim()))
                .observe(text, {subtree: true, childList: true, characterData: true,
                                attributes: true}); }"""
        )
        served_node("--workers", "1", RONIN_ALLOW=network, RONIN_VERIFY_INTERVAL_S="0")
        page.wait_for_function(
            "() => document.querySelector('#job-status .progress').dataset.status === 'completed'",
            timeout=CHANGE_TIMEOUT_MS,
        )
        assert page.evaluate(NOT_RELOADED)
        assert page.locator("#job-status progress").get_attribute("value") == "100"
        assert "completed" in page.inner_text("#job-status")
        assert page.evaluate("() => window.__seen.length") > 0
        screenshot(page, "job-completed")


def test_a_killed_beacon_shows_as_gone_without_a_reload(
    page: Any, served_node: Serve, screenshot: Screenshot
) -> None:
    network = "127.78.4.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT) as fleet:
        # Checked every second; one dead node of five must not look like a partition.
        node = served_node(
            "--workers",
            "1",
            RONIN_ALLOW=network,
            RONIN_VERIFY_INTERVAL_S="1",
            RONIN_VERIFY_GUARD_FRACTION="0.9",
        )
        discover(node, network)
        victim = fleet.fleet[2].node_id
        open_ready(page, f"{node.url}/network")
        node_page = page.context.new_page()
        open_ready(node_page, node.url + node_path(victim))
        assert page.evaluate("(id) => roninGraph.state(id)", victim) == "alive"
        assert "alive" in node_page.inner_text("main .lead")
        for opened in (page, node_page):
            opened.evaluate(MARK)

        fleet.kill(2)
        page.wait_for_function(
            "(id) => roninGraph.state(id) === 'gone'", arg=victim, timeout=CHANGE_TIMEOUT_MS
        )
        page.wait_for_function(
            "() => document.querySelector('#graph-summary').innerText.includes('1 gone')",
            timeout=CHANGE_TIMEOUT_MS,
        )
        node_page.wait_for_function(
            "() => document.querySelector('main .lead').innerText.includes('gone')",
            timeout=CHANGE_TIMEOUT_MS,
        )
        for opened in (page, node_page):
            assert opened.evaluate(NOT_RELOADED)
        others = [b.node_id for b in fleet.fleet if b.node_id != victim]
        assert [page.evaluate("(id) => roninGraph.state(id)", o) for o in others] == ["alive"] * 4
        screenshot(page, "network-one-gone")
        screenshot(node_page, "node-gone")


def test_pages_ask_for_a_token_and_a_read_token_cannot_start_a_job(
    page: Any,
    new_page: Callable[[], Any],
    served_node: Serve,
    browser_log: BrowserLog,
    screenshot: Screenshot,
) -> None:
    network = "127.78.5.0/29"
    node = served_node("--workers", "0", RONIN_ALLOW=network, RONIN_API_TOKENS=TOKENS)
    for path in ("/", "/network", "/services", "/jobs"):
        page.goto(node.url + path)
        assert urlsplit(page.url).path == "/login", (path, page.url)
    screenshot(page, "login")

    page.fill("#token", READ)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    assert urlsplit(page.url).path == "/jobs"  # where it was going
    wait_ready(page)
    for path in ("/", "/network", "/services"):
        open_ready(page, node.url + path)
        assert urlsplit(page.url).path == path
    open_ready(page, f"{node.url}/jobs")
    assert page.locator("#start-form").count() == 0
    assert "write scope" in page.inner_text("main")
    screenshot(page, "jobs-read-only")

    # The form is not shown; a request made as if it were is refused with the reason.
    with page.expect_navigation() as refused:
        page.evaluate(
            """(target) => { const form = document.createElement('form');
            form.method = 'post'; form.action = '/jobs';
            for (const [name, value] of [['target_type', 'network_cidr'], ['target', target]]) {
                const input = document.createElement('input');
                input.name = name; input.value = value; form.appendChild(input); }
            document.body.appendChild(form); form.submit(); }""",
            network,
        )
    assert refused.value is not None
    assert refused.value.status == 403
    assert "write" in page.inner_text("main")
    browser_log.expect(r"status of 403")  # Chromium logs the refused navigation
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {READ}"}) as client:
        assert client.get("/v1/jobs").json()["items"] == []

    # A write token may start one, from the form, and cancel it from its page.
    write_page = new_page()
    write_page.goto(f"{node.url}/login")
    write_page.fill("#token", WRITE)
    with write_page.expect_navigation():
        write_page.click("form[action='/login'] button[type=submit]")
    open_ready(write_page, f"{node.url}/jobs")
    write_page.fill("#j-target", network)
    with write_page.expect_navigation():
        write_page.click("#start-form button[type=submit]")
    assert urlsplit(write_page.url).path.startswith("/jobs/")
    wait_ready(write_page)
    status = write_page.locator("#job-status .progress")
    assert status.get_attribute("data-status") == "pending"  # no job slot: it waits
    with write_page.expect_navigation():
        write_page.click("#cancel-form button[type=submit]")
    wait_ready(write_page)
    assert status.get_attribute("data-status") == "failed"  # a cancelled job fails, so:
    assert "cancelled" in write_page.inner_text("#job-facts")
    screenshot(write_page, "job-cancelled")

    assert browser_log.requests
    leaked = [url for url in browser_log.requests if READ in url or WRITE in url]
    assert leaked == []


def test_the_network_page_follows_new_nodes_finds_one_and_opens_a_clicked_one(
    page: Any, served_node: Serve, screenshot: Screenshot
) -> None:
    network = "127.78.6.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT) as fleet:
        node = served_node("--workers", "1", RONIN_ALLOW=network, RONIN_VERIFY_INTERVAL_S="0")
        open_ready(page, f"{node.url}/network")
        assert page.evaluate("() => roninGraph.nodes") == 0
        page.evaluate(MARK)
        discover(node, network)
        page.wait_for_function(
            f"() => roninGraph.nodes === {FLEET_SIZE}", timeout=CHANGE_TIMEOUT_MS
        )
        assert page.evaluate(NOT_RELOADED)
        assert page.inner_text("#graph-summary").startswith(f"{FLEET_SIZE} nodes")

        target = fleet.fleet[1].node_id
        page.fill("#graph-search", target)
        page.wait_for_function(
            "(id) => document.querySelector('#graph-hint').innerText.includes(id)", arg=target
        )
        page.wait_for_timeout(500)  # the camera's 300 ms move to the node found
        screenshot(page, "network-found")
        at = page.evaluate(
            """(id) => { const r = roninGraph.renderer;
            const node = r.getGraph().getNodeAttributes(id);
            return r.graphToViewport({x: node.x, y: node.y}); }""",
            target,
        )
        page.keyboard.press("Escape")  # the search's suggestions close
        box = page.locator("#graph").bounding_box()
        assert box is not None
        with page.expect_navigation():
            page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
        assert unquote(urlsplit(page.url).path) == f"/nodes/{target}"
        wait_ready(page)


def test_links_of_nodes_found_after_the_page_opened_are_drawn_live(
    page: Any, served_node: Serve
) -> None:
    network = "127.78.7.0/29"
    with FleetThread(network, FLEET_SIZE, KOS_PORT):
        node = served_node("--workers", "1", RONIN_ALLOW=network, RONIN_VERIFY_INTERVAL_S="0")
        open_ready(page, f"{node.url}/network")
        discover(node, network)
        page.wait_for_function(
            f"() => roninGraph.nodes === {FLEET_SIZE}", timeout=CHANGE_TIMEOUT_MS
        )
        page.wait_for_function(f"() => roninGraph.links === {FLEET_SIZE}", timeout=5_000)
