"""``POST /v1/jobs`` answered in front of FastAPI, for the route clients call thousands of
times a second.

Through the framework each submission paid for six middleware layers (Starlette's, FastAPI's
and Ronin's), routing, dependency injection, a ``Request`` and a ``Response``: half the
server's CPU in a py-spy profile at 3,500 requests/s. ``NodeApp`` hands these requests to
``DirectSubmit`` first, which does only what the route does, in the route's order, with the
route's answers byte for byte: the body cap (a declared length at once, a streamed body as it
arrives), the write scope (``auth.check_write``, which the route's dependency calls too), the
body as JSON, admission (``429`` with ``Retry-After``), and the node's ``submit``, whose group
commit writes the jobs that arrive together in one statement; an unexpected error is logged
once and answered ``500``, as ``errors.CatchAll`` does.

A submission with an ``Idempotency-Key`` goes to the route (FastAPI checks that header), as
does every other request. The route stays in the app, for the OpenAPI document and for those;
``tests/integration/test_api_direct_submit.py`` holds the two to the same answers.
"""

from __future__ import annotations

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ronin.api.auth import check_write
from ronin.api.errors import client_gone_response, internal_error, ronin_error_response
from ronin.api.limits import content_length, too_large
from ronin.api.state import NodeState
from ronin.api.wire import JOB
from ronin.errors import InvalidJson, RoninError

PATH = "/v1/jobs"
_KEY_HEADER = b"idempotency-key"
_JSON = (b"content-type", b"application/json")


class DirectSubmit:
    """The answer to ``POST /v1/jobs`` without an idempotency key, for ``NodeApp``."""

    def __init__(self, state: NodeState, max_body_bytes: int) -> None:
        self.state = state
        self.max_body_bytes = max_body_bytes

    @staticmethod
    def takes(scope: Scope) -> bool:
        """Whether this request is one this class answers."""
        return (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not any(name == _KEY_HEADER for name, _ in scope["headers"])
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body, location = await self._submit(scope, receive)
        except RoninError as exc:
            response = ronin_error_response(exc)
        except ClientDisconnect:
            response = client_gone_response(scope)
        except Exception as exc:  # what CatchAll does for every other route
            response = internal_error(scope, exc)
        else:
            headers = [(b"location", location), (b"content-length", b"%d" % len(body)), _JSON]
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)

    async def _submit(self, scope: Scope, receive: Receive) -> tuple[bytes, bytes]:
        """The new job as JSON and its ``Location``; the route's errors, raised."""
        cap = self.max_body_bytes
        declared = content_length(scope)
        if declared is not None and declared > cap:
            raise too_large(cap)
        state = self.state
        check_write(scope, state.settings.api_tokens)
        raw = await _body(receive, cap)
        try:
            params = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidJson("the request body is not valid JSON") from None
        await state.admission.admit(1)
        job, _ = await state.node.submit(params)
        state.admission.queued(1)
        return JOB.dump_json(job), b"/v1/jobs/%s" % str(job.job_id).encode()


async def _body(receive: Receive, cap: int) -> bytes:
    """The request's body, refused (413) the moment it passes ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise too_large(cap)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
