"""The dashboard's pages, in-process: each answers HTML with its headings and the map's data,
lists go page by page, and the session cookie is accepted where it should be and nowhere
else (no browser here: tests/browser drives the real one)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.api.pages import jobs as job_pages
from ronin.api.pages import map as map_pages
from ronin.store.jobs import JobStore
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.integration.api_support import (
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    api_client,
    assert_error,
    job_params,
)
from tests.integration.map_states_support import set_states

ORIGIN = "http://ronin.test"  # the test client's base URL: this node's origin
SAME_ORIGIN = {"Origin": ORIGIN}


def sighting(number: int, node: int, node_class: str, *capabilities: str) -> Sighting:
    return Sighting(
        service_id=f"did:kos:service:{number:03d}",
        node_id=f"did:kos:node:{node:02d}",
        node_class=node_class,
        endpoint=f"http://127.0.0.{node}:30437/klf",
        capabilities=capabilities,
        # From the time the test runs, not the time the module was imported: a "seen within"
        # filter must find the same services late in a long run.
        seen_at=datetime.now(UTC) - timedelta(minutes=number),
        metadata={"discovery_method": "http_probe", "response_time_ms": 12.4},
    )


def the_map() -> list[Sighting]:
    return [
        sighting(1, 1, "Griot", "story.tell", "klf"),
        sighting(2, 1, "Griot", "story.archive"),
        sighting(3, 2, "Tohunga", "heal", "klf"),
        sighting(4, 3, "Musa", "music.play", "klf"),
        sighting(5, 3, "Musa", "music.play"),
    ]


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap) -> Any:
    """The pages of a node without tokens (loopback only: nothing to log in to)."""
    await service_map.upsert(the_map())
    async with api_client(db_url, pool) as opened:
        yield opened


@pytest.fixture
async def guarded(db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap) -> Any:
    """The pages of a node with a read and a write token."""
    await service_map.upsert(the_map())
    async with api_client(db_url, pool, api_tokens=TOKENS) as opened:
        yield opened


def page(answer: httpx.Response, status: int = 200) -> str:
    """The HTML of an answer, checked to be a page of the dashboard."""
    assert answer.status_code == status, answer.text[:2000]
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "<main" in answer.text
    return answer.text


def headings(html: str) -> list[str]:
    return [text_of(h) for h in re.findall(r"<h[12][^>]*>(.*?)</h[12]>", html, re.S)]


def text_of(fragment: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def service_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-service="did:kos:service:(\d+)"', html)


def next_link(html: str) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]+)"', html)
    return unescape(found.group(1)) if found else None


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    answer = await client.post("/login", data={"token": token, "next": "/"}, headers=SAME_ORIGIN)
    assert answer.status_code == 303, answer.text
    return answer


async def test_every_page_answers_html_with_its_headings_and_the_map(
    client: httpx.AsyncClient,
) -> None:
    job = (await client.post("/v1/jobs", json=job_params())).json()

    overview = page(await client.get("/"))
    assert headings(overview)[:3] == ["Overview", "By state", "By class"]
    assert {"Jobs running", "Recent jobs", "Last changes"} <= set(headings(overview))
    assert "5 services on 3 nodes." in text_of(overview)
    assert re.search(r'data-state="alive">.*?data-count="services">5<', overview, re.S)
    assert all(name in overview for name in ("Griot", "Tohunga", "Musa"))
    assert job["job_id"] in overview  # among the recent jobs, with its progress bar
    assert 'data-cursor="' in overview  # where the live change list follows the feed from
    assert "service_added" in overview  # the last changes: the five additions

    network = page(await client.get("/network"))
    assert headings(network)[0] == "Network"
    assert 'id="graph-summary"' in network
    assert "/static/vendor/sigma/sigma.min.js" in network
    assert "/static/vendor/graphology/graphology.umd.min.js" in network

    services = page(await client.get("/services"))
    assert headings(services)[0] == "Services"
    assert service_ids(services) == ["001", "002", "003", "004", "005"]

    node = page(await client.get("/nodes/did:kos:node:01"))
    assert headings(node)[:4] == ["Node did:kos:node:01", "Services", "Peers", "State history"]
    assert service_ids(node) == ["001", "002"]
    assert "story.tell" in node
    assert "http://127.0.0.1:30437/klf" in node
    assert "http_probe" in node
    assert "12 ms" in node
    assert "Referred by" in node
    assert "Refers to" in node

    jobs = page(await client.get("/jobs"))
    assert headings(jobs)[:2] == ["Jobs", "Start a discovery"]
    assert job["job_id"] in jobs
    assert 'action="/jobs"' in jobs

    one = page(await client.get(f"/jobs/{job['job_id']}"))
    assert headings(one)[:3] == [f"Job {job['job_id']}", "Attempts", "Result"]
    assert "network_cidr 127.0.0.1/32" in text_of(one)
    assert f'action="/jobs/{job["job_id"]}/cancel"' in one


async def test_a_node_page_shows_its_peers_both_ways_and_its_state_history(
    client: httpx.AsyncClient, service_map: ServiceMap, db_url: str
) -> None:
    job_id = str(uuid.uuid4())
    await service_map.record_links(
        job_id, [("did:kos:node:01", "did:kos:node:02"), ("did:kos:node:03", "did:kos:node:01")]
    )
    set_states(db_url, {2: "suspect"})
    html = page(await client.get("/nodes/did:kos:node:01"))
    referred_by = html[html.index('id="referred-by"') : html.index('id="refers-to"')]
    refers_to = html[html.index('id="refers-to"') : html.index('id="state-history"')]
    history = html[html.index('id="state-history"') :]
    assert 'href="/nodes/did:kos:node:03"' in referred_by
    assert "did:kos:node:02" not in referred_by
    assert 'href="/nodes/did:kos:node:02"' in refers_to
    assert f'href="/jobs/{job_id}"' in refers_to
    assert "did:kos:service:002" in history
    assert "state-suspect" in history
    assert "alive" in text_of(html[: html.index('id="node-services"')])  # its best state


async def test_every_page_sets_the_scripts_and_assets_it_names(client: httpx.AsyncClient) -> None:
    for path in ("/", "/network", "/services", "/jobs"):
        html = page(await client.get(path))
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            answer = await client.get(asset)
            assert answer.status_code == 200, asset
            assert len(answer.content) > 100, asset


async def test_missing_things_are_error_pages(client: httpx.AsyncClient) -> None:
    assert "No such node" in page(await client.get("/nodes/did:kos:node:99"), 404)
    assert "No such job" in page(await client.get(f"/jobs/{uuid.uuid4()}"), 404)
    assert "No such job" in page(await client.get("/jobs/not-a-uuid"), 404)
    assert "Bad page link" in page(await client.get("/jobs?cursor=garbage"), 400)


async def test_the_services_page_filters_as_the_map_does(client: httpx.AsyncClient) -> None:
    async def found(params: Any) -> list[str]:
        return service_ids(page(await client.get("/services", params=params)))

    assert await found({"capability": "klf"}) == ["001", "003", "004"]
    assert await found({"capability": "klf music.play"}) == ["004"]
    assert await found({"capability": "klf, music.play"}) == ["004"]
    assert await found({"any_capability": "heal story.archive"}) == ["002", "003"]
    assert await found({"node_class": "musa"}) == ["004", "005"]
    assert await found({"node_id": "did:kos:node:02"}) == ["003"]
    assert await found({"state": "gone"}) == []
    assert await found({"seen_since": "3m"}) == ["001", "002"]
    assert await found({"seen_since": "", "state": ["alive", "suspect"]}) == [
        "001",
        "002",
        "003",
        "004",
        "005",
    ]
    html = page(await client.get("/services", params={"capability": "klf"}))
    assert 'value="klf"' in html  # the form shows what was asked
    bad = page(await client.get("/services", params={"seen_since": "yesterday"}), 422)
    assert "seen_since" in text_of(bad)
    assert page(await client.get("/services", params={"state": "dead"}), 422)


async def test_the_services_page_goes_page_by_page(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(map_pages, "PAGE_SIZE", 2)
    seen: list[list[str]] = []
    link: str | None = "/services?capability=klf&state=alive"
    while link:
        html = page(await client.get(link))
        seen.append(service_ids(html))
        link = next_link(html)
        if link:
            assert "capability=klf" in link  # the filters ride along with the cursor
            assert "state=alive" in link
    assert seen == [["001", "003"], ["004"]]


async def test_the_jobs_page_goes_page_by_page(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_pages, "PAGE_SIZE", 2)
    made = [
        (await client.post("/v1/jobs", json=job_params(f"127.0.0.{n}/32"))).json()
        for n in (1, 2, 3)
    ]
    listed: list[str] = []
    link: str | None = "/jobs"
    pages = 0
    while link:
        html = page(await client.get(link))
        listed += re.findall(r'<a href="/jobs/([0-9a-f-]{36})"', html)
        link = next_link(html)
        pages += 1
    assert pages == 2
    assert listed == [job["job_id"] for job in reversed(made)]
    pending = page(await client.get("/jobs", params={"status": "completed"}))
    assert re.findall(r'<a href="/jobs/([0-9a-f-]{36})"', pending) == []


async def test_a_page_form_starts_and_cancels_a_job_without_tokens(
    client: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    form = {"target_type": "network_cidr", "target": "127.0.0.5/32", "depth": "2"}
    form_data = {**form, "protocols": ["http-api", "mdns"]}
    answer = await client.post("/jobs", data=form_data, headers=SAME_ORIGIN)
    assert answer.status_code == 303, answer.text
    job_id = answer.headers["location"].removeprefix("/jobs/")
    job = await JobStore(pool).get(uuid.UUID(job_id))
    assert job.params["target"] == {"type": "network_cidr", "value": "127.0.0.5/32"}
    assert job.params["depth"] == 2
    assert job.params["protocols"] == ["http-api", "mdns"]

    answer = await client.post(f"/jobs/{job_id}/cancel", headers=SAME_ORIGIN)
    assert answer.status_code == 303
    job = await JobStore(pool).get(uuid.UUID(job_id))
    assert job.status == "failed"
    again = await client.post(f"/jobs/{job_id}/cancel", headers=SAME_ORIGIN)
    assert "Already ended" in page(again, 409)


async def test_a_bad_form_is_shown_again_with_what_is_wrong(client: httpx.AsyncClient) -> None:
    form = {"target_type": "network_cidr", "target": "not a network", "depth": "2"}
    html = page(await client.post("/jobs", data=form, headers=SAME_ORIGIN), 422)
    assert "The job was not started" in html
    assert 'value="not a network"' in html
    outside = {"target_type": "network_cidr", "target": "192.0.2.0/24"}
    assert "not started" in page(await client.post("/jobs", data=outside, headers=SAME_ORIGIN), 403)
    too_deep = {"target_type": "domain", "target": "example.org", "depth": "99"}
    assert "depth" in page(await client.post("/jobs", data=too_deep, headers=SAME_ORIGIN), 422)


async def test_pages_without_a_session_go_to_the_login_form(guarded: httpx.AsyncClient) -> None:
    for path in ("/", "/network", "/services?node_class=Griot", "/nodes/did:kos:node:01", "/jobs"):
        answer = await guarded.get(path)
        assert answer.status_code == 303, path
        location = answer.headers["location"]
        assert location.startswith("/login"), location
        assert READ_TOKEN not in location
    assert (await guarded.get("/services?node_class=Griot")).headers["location"] == (
        "/login?next=%2Fservices%3Fnode_class%3DGriot"
    )
    form = page(await guarded.get("/login?next=/jobs"))
    assert headings(form)[0] == "Log in"
    assert 'type="password"' in form
    assert 'name="next" value="/jobs"' in form
    guarded.cookies.set("ronin_session", "not-a-token")
    assert (await guarded.get("/")).status_code == 303


async def test_logging_in_sets_the_session_cookie(guarded: httpx.AsyncClient) -> None:
    wrong = await guarded.post("/login", data={"token": "nope", "next": "/"}, headers=SAME_ORIGIN)
    assert "not one of this node" in page(wrong, 401)
    assert "set-cookie" not in wrong.headers

    answer = await guarded.post(
        "/login", data={"token": READ_TOKEN, "next": "/jobs"}, headers=SAME_ORIGIN
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/jobs"
    cookie = answer.headers["set-cookie"]
    parts = [part.strip().lower() for part in cookie.split(";")]
    assert parts[0] == f"ronin_session={READ_TOKEN}".lower()
    assert {"httponly", "samesite=strict", "path=/"} <= set(parts)
    assert not any(p.startswith(("max-age", "expires")) for p in parts)  # a browser session
    assert READ_TOKEN not in answer.headers["location"]

    overview = page(await guarded.get("/"))
    assert "read token" in overview
    assert 'action="/logout"' in overview
    elsewhere = await guarded.post(
        "/login", data={"token": READ_TOKEN, "next": "//evil.test/"}, headers=SAME_ORIGIN
    )
    assert elsewhere.headers["location"] == "/"  # only a path of this node

    out = await guarded.post("/logout", headers=SAME_ORIGIN)
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    assert "ronin_session=" in out.headers["set-cookie"]
    assert (await guarded.get("/")).status_code == 303


async def test_a_read_token_may_look_but_not_start_or_cancel(
    guarded: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    await login(guarded, READ_TOKEN)
    jobs = page(await guarded.get("/jobs"))
    assert "needs a token with the write scope" in jobs
    form = {"target_type": "network_cidr", "target": "127.0.0.1/32"}
    refused = page(await guarded.post("/jobs", data=form, headers=SAME_ORIGIN), 403)
    assert "Write access needed" in refused
    assert "read token" in refused
    assert (await JobStore(pool).list_jobs()).items == []

    job, _ = await JobStore(pool).insert(job_params(), max_attempts=1)
    cancel = await guarded.post(f"/jobs/{job.job_id}/cancel", headers=SAME_ORIGIN)
    assert "Write access needed" in page(cancel, 403)
    assert (await JobStore(pool).get(job.job_id)).status == "pending"


async def test_a_write_token_starts_a_job_from_the_form(
    guarded: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    await login(guarded, WRITE_TOKEN)
    form = {"target_type": "network_cidr", "target": "127.0.0.1/32", "protocols": "http-api"}
    answer = await guarded.post("/jobs", data=form, headers=SAME_ORIGIN)
    assert answer.status_code == 303, answer.text
    [job] = (await JobStore(pool).list_jobs()).items
    assert answer.headers["location"] == f"/jobs/{job.job_id}"
    html = page(await guarded.get(answer.headers["location"]))
    assert 'id="cancel-form"' in html


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.test"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": ORIGIN},
        {},  # a post that does not say where it comes from
    ],
)
async def test_a_form_post_from_elsewhere_is_refused(
    guarded: httpx.AsyncClient, pool: AsyncConnectionPool[Any], headers: dict[str, str]
) -> None:
    await login(guarded, WRITE_TOKEN)
    form = {"target_type": "network_cidr", "target": "127.0.0.1/32"}
    refused = await guarded.post("/jobs", data=form, headers=headers)
    assert "Refused" in page(refused, 403)
    assert (await JobStore(pool).list_jobs()).items == []
    same = {"Sec-Fetch-Site": "same-origin", "Origin": ORIGIN}
    assert (await guarded.post("/jobs", data=form, headers=same)).status_code == 303
    # Behind a proxy that renames the host, the browser still says same-origin: that decides.
    proxied = {"Sec-Fetch-Site": "same-origin", "Origin": "https://ronin.example"}
    assert (await guarded.post("/jobs", data=form, headers=proxied)).status_code == 303


async def test_v1_reads_accept_the_cookie_and_writes_do_not(
    guarded: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    assert_error(await guarded.get("/v1/services"), 401, "UNAUTHENTICATED")
    await login(guarded, WRITE_TOKEN)
    services = await guarded.get("/v1/services")
    assert services.status_code == 200
    assert len(services.json()["items"]) == 5
    assert (await guarded.get("/v1/changes")).status_code == 200
    assert (await guarded.get("/v1/jobs")).status_code == 200

    # The write token's cookie, on routes that write: refused as if there were no token.
    assert_error(await guarded.post("/v1/jobs", json=job_params()), 401, "UNAUTHENTICATED")
    job, _ = await JobStore(pool).insert(job_params(), max_attempts=1)
    assert_error(await guarded.delete(f"/v1/jobs/{job.job_id}"), 401, "UNAUTHENTICATED")
    assert (await JobStore(pool).get(job.job_id)).status == "pending"
    klf = {"type": "TASK_REQUEST", "from": "did:kos:a:1", "to": "did:kos:b:2", "payload": {}}
    assert_error(await guarded.post("/v1/klf", json=klf), 401, "UNAUTHENTICATED")

    # A bearer header still works beside the cookie, and wins over it.
    bearer = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    assert (await guarded.post("/v1/jobs", json=job_params(), headers=bearer)).status_code == 202
    read_bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert_error(
        await guarded.post("/v1/jobs", json=job_params(), headers=read_bearer),
        403,
        "INSUFFICIENT_SCOPE",
    )
    assert_error(
        await guarded.get("/v1/services", headers={"Authorization": "Bearer unknown"}),
        401,
        "UNAUTHENTICATED",
    )
    guarded.cookies.set("ronin_session", "not-a-token")
    assert_error(await guarded.get("/v1/services"), 401, "UNAUTHENTICATED")


async def test_a_bad_address_is_an_error_page_and_a_post_needs_a_session(
    guarded: httpx.AsyncClient,
) -> None:
    form = {"target_type": "network_cidr", "target": "127.0.0.1/32"}
    answer = await guarded.post("/jobs", data=form, headers=SAME_ORIGIN)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fjobs"
    await login(guarded, READ_TOKEN)
    assert "Bad request" in page(await guarded.get("/jobs", params={"status": "bogus"}), 422)
    assert_error(await guarded.get("/v1/jobs", params={"status": "bogus"}), 422, "INVALID_VALUE")


async def test_what_the_map_holds_is_escaped_in_the_pages(
    client: httpx.AsyncClient, service_map: ServiceMap
) -> None:
    hostile = "<script>alert(1)</script>"
    await service_map.upsert(
        [
            Sighting(
                service_id="did:kos:service:666",
                node_id="did:kos:node:66",
                node_class=hostile,
                endpoint=f"http://127.0.0.66/{hostile}",
                capabilities=(hostile,),
                seen_at=datetime.now(UTC),
            )
        ]
    )
    for path in ("/", "/services", "/nodes/did:kos:node:66", "/network"):
        html = page(await client.get(path))
        assert hostile not in html, path
        assert "&lt;script&gt;" in html, path
