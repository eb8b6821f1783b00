"""The real-browser harness: Debian's Chromium driven by Playwright, against ``ronin serve``.

- ``browser``: one headless Chromium for this package's tests (``/usr/bin/chromium``, never a
  browser Playwright downloads), WebGL in software (SwiftShader) for sigma. Without it the
  tests fail when ``CI`` is set and are skipped otherwise.
- ``page``, ``new_page()``: a fresh context (its own cookies) and page. Every console error and
  uncaught page error fails the test, unless the test itself expects it (``browser_log.expect``)
  or it is in ``BENIGN`` below; every request the browser makes is recorded.
- ``served_node``: starts ``ronin serve`` processes on this test's database.
- ``screenshot``: keeps ``test-artifacts/screenshots/<test>-<name>.png`` and checks it is not
  blank.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.acceptance import serve_support
from tests.acceptance.serve_support import Process
from tests.support.chromium import CHROMIUM, LAUNCH_ARGS, VIEWPORT

#: How long any one Playwright step may wait (a page load, a selector).
STEP_TIMEOUT_MS = 20_000
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
#: A screenshot with fewer distinct colours than this, or one colour covering more than
#: ``MAX_ONE_COLOUR`` of it, is blank (a page's text alone antialiases to dozens of colours).
MIN_COLOURS = 16
MAX_ONE_COLOUR = 0.995
#: Console errors every page may log, each with the reason it is harmless. None so far.
BENIGN: tuple[tuple[re.Pattern[str], str], ...] = ()


def browser_available() -> None:
    """Fail (in CI) or skip (elsewhere) unless Debian's Chromium is installed."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser(template_database: str) -> Iterator[Any]:
    """One headless Chromium for the browser tests.

    While Playwright's sync API is open, this thread's asyncio loop counts as running, so
    ``asyncio.run`` fails in it: the template database (migrated with ``asyncio.run``) is made
    first, and the browser closes with this package, before any other test needs a loop.
    """
    browser_available()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class BrowserLog:
    """What a test's pages said and asked for."""

    #: Console errors and uncaught exceptions, as "<page url>: <text>".
    errors: list[str] = field(default_factory=list)
    #: Every URL the browser requested, in order (pages, scripts, fetches, event streams).
    requests: list[str] = field(default_factory=list)
    _expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        """A console error this test provokes on purpose (a 403 page, say): not a failure."""
        self._expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        """The errors no test expected and ``BENIGN`` does not excuse."""
        excused = self._expected + [pattern for pattern, _reason in BENIGN]
        return [error for error in self.errors if not any(p.search(error) for p in excused)]


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def new_page(browser: Any, browser_log: BrowserLog) -> Iterator[Callable[[], Any]]:
    """``new_page()``: a page in a fresh context (no cookie of another), logging into
    ``browser_log``; closed when the test ends."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.on("request", lambda request: browser_log.requests.append(request.url))
        context.on("page", lambda opened: _log_errors(opened, browser_log))
        return context.new_page()

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()


def _log_errors(opened: Any, log: BrowserLog) -> None:
    def console(message: Any) -> None:
        if message.type == "error":
            where = message.location.get("url") or opened.url
            log.errors.append(f"{where}: console error: {message.text}")

    opened.on("console", console)
    opened.on("pageerror", lambda error: log.errors.append(f"{opened.url}: {error}"))


@pytest.fixture
def page(new_page: Callable[[], Any]) -> Any:
    """A fresh page, as ``new_page()`` opens one."""
    return new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A test that used ``page`` fails if its pages logged an error nobody expected."""
    outcome = yield
    log = getattr(item, "funcargs", {}).get("browser_log")
    if isinstance(log, BrowserLog) and (unexpected := log.unexpected()):
        raise AssertionError("the browser logged errors:\n" + "\n".join(unexpected))
    return outcome


@pytest.fixture
def served_node(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Process]]:
    """Start ``ronin serve --port 0 ARGS`` with ``ENV`` on this test's database; stopped after."""
    with ExitStack() as stack:

        def start(*args: str, **env: str) -> Process:
            return stack.enter_context(serve_support.served_node(tmp_path, db_url, *args, **env))

        yield start


def assert_not_blank(path: Path) -> None:
    """The picture at ``path`` shows something: many colours, none covering nearly all of it."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        pixels = rgb.width * rgb.height
        colours = rgb.getcolors(maxcolors=pixels) or []
    top = max((count for count, _colour in colours), default=pixels)
    assert len(colours) >= MIN_COLOURS, f"{path.name}: {len(colours)} colours only: blank?"
    assert top / pixels <= MAX_ONE_COLOUR, f"{path.name}: one colour covers {top / pixels:.1%}"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``screenshot(page, name)``: keep the page's picture as a file and check it is not blank."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")

    def take(page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert_not_blank(path)
        return path

    return take


def wait_ready(page: Any) -> None:
    """Wait until the page says it is interactive (``body[data-ready="1"]``)."""
    page.wait_for_selector('body[data-ready="1"]', state="attached")
