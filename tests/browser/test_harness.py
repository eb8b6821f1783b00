"""The harness itself, against pages this test serves: it sees errors, WebGL and blank pictures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.browser import conftest
from tests.browser.conftest import BrowserLog, assert_not_blank, wait_ready

#: No favicon request: a 404 for it would be a console error.
HEAD = "<!doctype html><link rel=icon href='data:,'>"
PAGES = {
    "/drawn": HEAD
    + """<title>drawn</title><body><h1>A heading</h1><canvas id=c width=300 height=150>
        </canvas><script>
        const gl = document.getElementById('c').getContext('webgl');
        gl.clearColor(0.1, 0.5, 0.8, 1); gl.clear(gl.COLOR_BUFFER_BIT);
        document.body.dataset.ready = '1';</script></body>""",
    "/throws": HEAD
    + """<title>throws</title><body><p>text</p><script>
        console.error('something broke'); null.property;</script></body>""",
    "/blank": HEAD + "<title>blank</title><body style='background:#fff'></body>",
}


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write((body or "not found").encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_drawn_page_is_ready_and_its_picture_not_blank(
    page: Any, site: str, screenshot: Callable[[Any, str], Path], browser_log: BrowserLog
) -> None:
    page.goto(f"{site}/drawn")
    wait_ready(page)
    assert page.evaluate("!!document.createElement('canvas').getContext('webgl2')")
    path = screenshot(page, "drawn")
    assert path.name == "test_a_drawn_page_is_ready_and_its_picture_not_blank-drawn.png"
    assert f"{site}/drawn" in browser_log.requests


def test_console_errors_and_exceptions_fail_a_test_unless_expected(
    page: Any, site: str, browser_log: BrowserLog
) -> None:
    page.goto(f"{site}/throws")
    page.wait_for_function("document.readyState === 'complete'")
    page.wait_for_timeout(100)  # the console event may trail the load by a task
    assert len(browser_log.unexpected()) == 2, browser_log.errors
    assert any("something broke" in error for error in browser_log.errors)
    browser_log.expect("something broke")
    browser_log.expect("Cannot read properties of null")
    assert browser_log.unexpected() == []


def test_a_blank_picture_is_refused(page: Any, site: str, tmp_path: Path) -> None:
    page.goto(f"{site}/blank")
    path = tmp_path / "blank.png"
    page.screenshot(path=str(path))
    with pytest.raises(AssertionError, match="colours only"):
        assert_not_blank(path)


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        conftest.browser_available()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        conftest.browser_available()
