"""Who is looking at a page: the session cookie's token and its scope, the login redirect,
and the checks a form that writes passes (a write token, a request from this node's pages)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from fastapi import Request

from ronin.api.auth import session_token, token_scope
from ronin.api.state import node_of
from ronin.config import Scope

#: The most fields a page form sends; more is not one of ours.
MAX_FORM_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class PageSession:
    """``tokens``: the node has tokens configured (else loopback only, nothing to log in to);
    ``scope``: what the session may do, None when no valid token is held."""

    tokens: bool
    scope: Scope | None

    @property
    def may_write(self) -> bool:
        return self.scope == "write"


class PageRefused(Exception):
    """A page request refused, answered with an error page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class LoginNeeded(Exception):
    """No valid session where tokens are configured: the answer is the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def page_session(request: Request) -> PageSession:
    """The session of ``request`` (the token in its cookie, checked against the node's)."""
    tokens = node_of(request).settings.api_tokens
    if not tokens:
        return PageSession(tokens=False, scope="write")
    given = session_token(request.scope)
    return PageSession(tokens=True, scope=token_scope(tokens, given) if given else None)


async def require_session(request: Request) -> PageSession:
    """A dependency of every page: a valid session, or the login form."""
    session = page_session(request)
    if session.scope is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target)
    return session


def login_location(next_path: str) -> str:
    """The login form, coming back to ``next_path`` (a path of this node, never a token)."""
    return "/login?" + urlencode({"next": next_path}) if next_path != "/" else "/login"


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this node (not ``//host`` or a URL), else ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def check_same_origin(request: Request) -> None:
    """Refuse a form post another site made the browser send (with this node's cookie).

    The browser says where the request comes from: ``Sec-Fetch-Site`` when it sends it (every
    current browser does; it holds behind a proxy that renames the host), else ``Origin``,
    compared with this node's own. A request that says neither is refused too."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site != "same-origin":
            raise PageRefused(403, "Refused", f"a form of another site ({site}) cannot post here")
        return
    origin = request.headers.get("origin")
    if origin is None:
        raise PageRefused(
            403, "Refused", "a form post must say where it comes from (Origin header)"
        )
    if origin != f"{request.url.scheme}://{request.url.netloc}":
        raise PageRefused(403, "Refused", "a form of another origin cannot post here")


def check_may_write(session: PageSession) -> None:
    """A form that starts or cancels a job needs a write token."""
    if not session.may_write:
        raise PageRefused(
            403,
            "Write access needed",
            "You are logged in with a read token: it shows the map and the jobs, but starting "
            "or cancelling a discovery needs a token with the write scope. Log out and log in "
            "with a write token.",
        )


async def form_fields(request: Request) -> dict[str, list[str]]:
    """The fields of a posted form (URL-encoded: page forms upload nothing)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise PageRefused(415, "Not a form", f"a page form is sent as {FORM_TYPE}")
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        return parse_qs(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise PageRefused(400, "Bad form", "too many fields") from None


def first(fields: dict[str, list[str]], name: str) -> str:
    """A form field's first value, stripped ("" when absent)."""
    values = fields.get(name)
    return values[0].strip() if values else ""
