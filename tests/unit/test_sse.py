"""The Server-Sent Events parser of ``ronin watch``: events whole, however the network cuts them."""

from __future__ import annotations

import pytest

from ronin.cli.sse import Event, SSEParser

STREAM = (
    ": a comment, then a change and a heartbeat\n"
    "id: 0000000000000001\n"
    "event: service_added\n"
    'data: {"cursor": "0000000000000001"}\n'
    "\n"
    "id: 0000000000000001\n"
    "event: heartbeat\n"
    'data: {"cursor": "0000000000000001"}\n'
    "\n"
)
EVENTS = [
    Event("service_added", '{"cursor": "0000000000000001"}', "0000000000000001"),
    Event("heartbeat", '{"cursor": "0000000000000001"}', "0000000000000001"),
]


def fed(parser: SSEParser, *chunks: str) -> list[Event]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_a_whole_stream_in_one_chunk() -> None:
    parser = SSEParser()
    assert fed(parser, STREAM) == EVENTS
    assert parser.last_id == "0000000000000001"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_any_split_into_chunks_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert fed(SSEParser(), *chunks) == EVENTS


@pytest.mark.parametrize("ending", ["\r\n", "\r"])
def test_crlf_and_cr_end_lines_too(ending: str) -> None:
    stream = STREAM.replace("\n", ending)
    assert fed(SSEParser(), stream) == EVENTS
    # A CRLF cut between two chunks is one line end, not an empty line (no extra dispatch).
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert fed(SSEParser(), *chunks) == EVENTS


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = SSEParser()
    assert fed(parser, "data: a\r", "\ndata: b\r", "\n\r", "\n") == [Event("message", "a\nb", None)]


def test_several_data_lines_are_one_data_joined_with_newlines() -> None:
    stream = "event: note\ndata: first\ndata:second\ndata:  third\ndata\n\n"
    assert fed(SSEParser(), stream) == [Event("note", "first\nsecond\n third\n", None)]


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = ":keep-alive\n: another\nretry: 1000\nfoo: bar\ndata: x\n:inside\n\n:\n\n"
    assert fed(SSEParser(), stream) == [Event("message", "x", None)]


def test_only_cr_and_lf_end_a_line() -> None:
    """JSON may hold U+2028 and other Unicode line breaks raw: they are data."""
    data = '{"name": "a\u2028b\u0085c\x0bd\x1ce"}'
    assert fed(SSEParser(), f"data: {data}\n\n") == [Event("message", data, None)]


def test_the_id_lasts_until_another_and_counts_once_the_event_is_whole() -> None:
    parser = SSEParser()
    assert fed(parser, "id: 7\ndata: a\n\ndata: b\n\n") == [
        Event("message", "a", "7"),
        Event("message", "b", "7"),
    ]
    fed(parser, "id: 8\ndata: c\n")  # cut before its blank line
    assert parser.last_id == "7"  # a reconnection resumes before the unfinished event
    fed(parser, "\n")
    assert parser.last_id == "8"


def test_an_event_without_data_is_not_dispatched_but_its_id_counts() -> None:
    parser = SSEParser()
    assert fed(parser, "id: 9\nevent: nothing\n\n") == []
    assert parser.last_id == "9"


def test_an_id_with_nul_is_ignored() -> None:
    parser = SSEParser("5")
    assert fed(parser, "id: 6\0\ndata: a\n\n") == [Event("message", "a", "5")]


def test_a_leading_byte_order_mark_is_dropped_and_an_unfinished_event_is_not_dispatched() -> None:
    parser = SSEParser()
    assert fed(parser, "\ufeffdata: a\n\ndata: b") == [Event("message", "a", None)]
    assert fed(parser, "") == []
