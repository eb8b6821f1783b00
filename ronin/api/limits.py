"""A cap on request bodies, enforced before a route reads them.

A declared ``Content-Length`` over the cap is refused at once; a chunked body is counted as
it arrives and refused the moment it passes the cap, so no request can make the node buffer
more than ``max_bytes``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ronin.api.errors import error_response
from ronin.errors import PayloadTooLarge

#: Job params and KLF messages are a few hundred bytes; this leaves room and no more.
MAX_BODY_BYTES = 64 * 1024
#: The most jobs one batch submission carries.
MAX_BATCH_JOBS = 1000
#: Room for one job of a batch: the largest valid params (a 255-character target, 64 ports,
#: every field) with a 255-character idempotency key take about 1.1 KiB written compactly.
MAX_BATCH_ITEM_BYTES = 2 * 1024
#: ``POST /v1/jobs/batch``'s cap: a full batch of the largest jobs, pretty-printed.
BATCH_MAX_BODY_BYTES = MAX_BATCH_JOBS * MAX_BATCH_ITEM_BYTES


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (or the cap ``by_path`` gives an
    exact path)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, by_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.by_path = by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.by_path.get(scope["path"], self.max_bytes)
        declared = content_length(scope)
        if declared is not None and declared > cap:
            response = error_response(413, PayloadTooLarge.code, too_large(cap).message)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise too_large(cap)
            return message

        await self.app(scope, counted, send)


def too_large(cap: int) -> PayloadTooLarge:
    """The error of a body over ``cap`` bytes."""
    return PayloadTooLarge(f"the request body is larger than {cap} bytes")


def content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
