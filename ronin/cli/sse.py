"""A Server-Sent Events parser, as the HTML standard reads a stream (no extra dependency).

Fed text in whatever chunks the network gives, it returns each event when the blank line
that ends it arrives: lines may end in LF, CRLF or CR (a CR at the end of one chunk and an
LF at the start of the next are one line end), ``:`` starts a comment, several ``data:``
lines are joined with newlines, and the last ``id:`` stays the stream's id until another
comes. That id counts once its event is whole (ended by its blank line): a stream cut in the
middle of an event resumes before it, not after (``Last-Event-ID``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What ends a line in an event stream: nothing else (not U+2028, which JSON may hold raw).
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its type (``message`` if none was given), its data, the stream's last id."""

    event: str
    data: str
    id: str | None


class SSEParser:
    """Events out of a text stream, fed a chunk at a time."""

    def __init__(self, last_id: str | None = None) -> None:
        #: The id of the last whole event that set one (or carried it on): what a
        #: reconnection sends as ``Last-Event-ID``.
        self.last_id = last_id
        self._id = last_id
        self._pending = ""
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: str) -> list[Event]:
        """The events that ``chunk`` completes, in order."""
        if not chunk:
            return []
        if not self._started:
            self._started = True
            chunk = chunk.removeprefix("\ufeff")
        if self._after_cr and chunk.startswith("\n"):
            chunk = chunk[1:]  # the LF of a CRLF split between chunks
        self._after_cr = chunk.endswith("\r")
        text = self._pending + chunk
        events: list[Event] = []
        start = 0
        for end in _LINE_END.finditer(text):
            event = self._line(text[start : end.start()])
            if event is not None:
                events.append(event)
            start = end.end()
        self._pending = text[start:]
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields: ignored (reconnection has its own backoff).
        return None

    def _dispatch(self) -> Event | None:
        """The event the blank line ends; none if it had no data (its id still counts)."""
        self.last_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Event(event or "message", "\n".join(data), self.last_id)
