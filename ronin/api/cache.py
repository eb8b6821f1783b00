"""A micro-cache for the map's read routes: the same query within ``ttl_s`` is answered from
memory, without FastAPI or the database.

Many nodes polling "who offers capability X" is the map's hottest path, and an answer a
second old is as good as a fresh one for a map whose entries live for hours. Only ``200``
answers to authorised ``GET`` requests on ``/v1/services`` and ``/v1/nodes`` are kept; the
cache is bounded in entries, per process, and off with ``RONIN_API_CACHE_S=0``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CACHED_PATHS = ("/v1/services", "/v1/nodes")
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class _Entry:
    expires_at: float
    start: Message
    body: bytes


class ReadCache:
    """ASGI middleware serving repeated map reads from memory for ``ttl_s`` seconds."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ttl_s: float,
        authorized: Callable[[Scope], bool],
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.app = app
        self.ttl_s = ttl_s
        self.authorized = authorized
        self.max_entries = max_entries
        self._entries: dict[tuple[str, bytes], _Entry] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._cacheable(scope):
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"])
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > time.monotonic():
            await send(entry.start)
            await send({"type": "http.response.body", "body": entry.body})
            return
        await self.app(scope, receive, self._keeping(key, send))

    def _cacheable(self, scope: Scope) -> bool:
        return (
            self.ttl_s > 0
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(CACHED_PATHS)
            and self.authorized(scope)
        )

    def _keeping(self, key: tuple[str, bytes], send: Send) -> Send:
        """``send``, keeping a complete 200 answer under ``key``."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and start["status"] == 200:
                    self._store(key, _Entry(time.monotonic() + self.ttl_s, start, b"".join(chunks)))
            await send(message)

        return keep

    def _store(self, key: tuple[str, bytes], entry: _Entry) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = entry
