"""A small Server-Sent Events client for tests: the fields of the WHATWG event-stream format
that Ronin sends (``id``, ``event``, ``data``), read with httpx, no other dependency.

An event counts only once its blank line has arrived (the format's "dispatch"): a client
cut off in the middle of one resumes from the last whole event, as a browser does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event; ``id`` is None when the event set none."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return orjson.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a ``text/event-stream`` answer, as they arrive."""
    async for event in parse(response.aiter_lines()):
        yield event


async def parse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Events from the lines of an event stream (line ends already stripped)."""
    kind = ""
    data: list[str] = []
    event_id: str | None = None
    seen = False
    async for line in lines:
        if line == "":
            if seen:
                yield Event(kind or "message", "\n".join(data), event_id)
            kind, data, event_id, seen = "", [], None, False
            continue
        if line.startswith(":"):
            continue  # a comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen = True
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: Any = None,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[httpx.Response]:
    """A GET of an event stream, its body not read yet (the caller checks the status)."""
    sent = dict(headers or {}) | {"Accept": "text/event-stream"}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    async with client.stream("GET", url, params=params, headers=sent) as response:
        yield response
