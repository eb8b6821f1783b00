"""``/login`` and ``/logout``: the token a person types, kept in the session cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from ronin.api.auth import SESSION_COOKIE, token_scope
from ronin.api.pages.render import PAGE_HEADERS, render
from ronin.api.pages.session import check_same_origin, first, form_fields, local_path
from ronin.api.state import node_of

router = APIRouter(include_in_schema=False)
Next = Annotated[str | None, Query(alias="next", max_length=2000)]


@router.get("/login")
async def login_form(request: Request, next_path: Next = None) -> Response:
    """The login form; without tokens there is nothing to log in to."""
    if not node_of(request).settings.api_tokens:
        return _redirect(local_path(next_path))
    return render(request, "login.html", next=local_path(next_path), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token (sent in the body, never in a URL) and keep it in the session cookie."""
    check_same_origin(request)
    fields = await form_fields(request)
    next_path = local_path(first(fields, "next"))
    tokens = node_of(request).settings.api_tokens
    if not tokens:
        return _redirect(next_path)
    token = first(fields, "token")
    if not token or token_scope(tokens, token) is None:
        error = "That token is not one of this node's (RONIN_API_TOKENS)."
        return render(request, "login.html", status=401, next=next_path, error=error)
    answer = _redirect(next_path)
    # No Max-Age or Expires: the session ends with the browser's.
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the session's token."""
    check_same_origin(request)
    answer = _redirect("/login" if node_of(request).settings.api_tokens else "/")
    answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return answer


def _redirect(location: str) -> RedirectResponse:
    """A "see other" to a path of this node (a relative location: no Host header in it)."""
    return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)
