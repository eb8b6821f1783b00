"""Rendering a page: the Jinja2 templates, the headers every page carries, error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ronin import __version__

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
#: Every script, style, image and connection from this node only: no inline script, no CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _number(value: Any) -> str:
    """1204 -> "1,204"."""
    return f"{int(value):,}"


def _when(value: datetime | None) -> str:
    """A time in UTC to the second, as operators read logs."""
    if value is None:
        return "\u2013"  # an en dash, as the tables show a missing value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _path(value: str) -> str:
    """A path segment: a DID's colons kept, anything else percent-encoded."""
    return quote(value, safe=":@")


_environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(number=_number, when=_when, path=_path, query=urlencode)
_environment.globals.update(version=__version__)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with ``context``, and what every page has: the session, the path."""
    from ronin.api.pages.session import page_session  # the session reads the node's tokens

    session = page_session(request)
    html = _environment.get_template(template).render(
        request=request, session=session, path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    """An error as a page a person reads, with a way back."""
    return render(request, "error.html", status=status, title=title, message=message)
