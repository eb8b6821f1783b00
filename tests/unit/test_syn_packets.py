"""The SYN sweep's packets: a SYN's checksum is right, and an answer counts only when its
acknowledgement number is the one the probe's SYN asked for (a forged or stray SYN-ACK never
makes a port open)."""

from __future__ import annotations

import socket
import struct

import pytest

from ronin.discovery.syn_sweep import (
    ACK,
    RST,
    SYN,
    SYN_ACK,
    Answers,
    checksum_base,
    ones_sum,
    syn_segment,
    tcp_checksum,
)

SOURCE = int.from_bytes(socket.inet_aton("127.0.0.1"), "big")
TARGET = int.from_bytes(socket.inet_aton("127.77.1.2"), "big")
#: A SYN from 127.0.0.1:40999 to 127.77.1.2:30999, sequence 0x5EED1234, that Linux answered
#: with a SYN-ACK (it drops a SYN whose checksum is wrong and counts it in InCsumErrors).
KNOWN_SYN = bytes.fromhex("a02779175eed1234000000005002040022320000")
OUR_PORT = 40999


def test_the_ones_complement_sum_is_rfc_1071s() -> None:
    # RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert ones_sum(bytes.fromhex("0001f203f4f5f6")) == ones_sum(bytes.fromhex("0001f203f4f5f600"))


def test_a_syn_is_the_known_packet() -> None:
    base = checksum_base(SOURCE, OUR_PORT)
    assert syn_segment(base, OUR_PORT, TARGET, 30999, 0x5EED1234) == KNOWN_SYN
    assert tcp_checksum(SOURCE, TARGET, KNOWN_SYN) == 0xFFFF


@pytest.mark.parametrize(
    ("target", "port", "seq"),
    [("10.0.0.1", 80, 0), ("192.168.255.254", 65535, 0xFFFFFFFF), ("172.16.0.9", 1, 0x80000000)],
)
def test_every_syn_checksum_verifies(target: str, port: int, seq: int) -> None:
    address = int.from_bytes(socket.inet_aton(target), "big")
    segment = syn_segment(checksum_base(SOURCE, 61000), 61000, address, port, seq)
    assert len(segment) == 20
    assert segment[13] == SYN
    assert tcp_checksum(SOURCE, address, segment) == 0xFFFF
    assert tcp_checksum(SOURCE, address ^ 1, segment) != 0xFFFF  # the pseudo-header counts


def answer(
    *, flags: int, ack: int, sport: int = 30999, dport: int = OUR_PORT, options: int = 0
) -> bytes:
    """An IPv4 packet from TARGET to SOURCE, as the raw socket hands it over."""
    ip = struct.pack(
        "!BBHHHBBHII", 0x45 + options, 0, 40, 0, 0, 64, socket.IPPROTO_TCP, 0, TARGET, SOURCE
    )
    ip += b"\x01" * (4 * options)  # options (NOPs)
    return ip + struct.pack("!HHIIBBHHH", sport, dport, 777, ack, 5 << 4, flags, 1024, 0, 0)


@pytest.fixture
def answers() -> Answers:
    waiting = Answers(OUR_PORT)
    waiting.pending[TARGET << 16 | 30999] = (42, 0x5EED1234)
    return waiting


def test_a_syn_ack_with_the_right_ack_is_open(answers: Answers) -> None:
    answers.take(answer(flags=SYN_ACK, ack=0x5EED1235))
    assert answers.opened == [42]
    assert not answers.pending


def test_an_rst_with_the_right_ack_is_refused(answers: Answers) -> None:
    answers.take(answer(flags=RST | ACK, ack=0x5EED1235, options=2))
    assert answers.counts() == {"refused": 1}
    assert not answers.opened
    assert not answers.pending


@pytest.mark.parametrize(
    "packet",
    [
        answer(flags=SYN_ACK, ack=0x5EED1234),  # the sequence itself, not plus one
        answer(flags=SYN_ACK, ack=0x12345678),  # forged: a guess
        answer(flags=SYN_ACK, ack=0x5EED1235, dport=OUR_PORT + 1),  # to another port of ours
        answer(flags=SYN_ACK, ack=0x5EED1235, sport=31000),  # from another port of theirs
        answer(flags=SYN, ack=0x5EED1235),  # no ACK bit
        answer(flags=RST, ack=0x5EED1235),  # an RST without ACK says nothing of our SYN
        answer(flags=RST | ACK, ack=0),
        answer(flags=SYN_ACK, ack=0x5EED1235)[:30],  # cut short
    ],
)
def test_anything_else_settles_nothing(answers: Answers, packet: bytes) -> None:
    answers.take(packet)
    assert not answers.opened
    assert answers.counts() == {}
    assert answers.pending


def test_a_repeated_answer_counts_once(answers: Answers) -> None:
    answers.take(answer(flags=SYN_ACK, ack=0x5EED1235))
    answers.take(answer(flags=SYN_ACK, ack=0x5EED1235))
    answers.take(answer(flags=RST | ACK, ack=0x5EED1235))
    assert answers.opened == [42]
    assert answers.counts() == {}


def test_the_ack_wraps_around() -> None:
    waiting = Answers(OUR_PORT)
    waiting.pending[TARGET << 16 | 30999] = (7, 0xFFFFFFFF)
    waiting.take(answer(flags=SYN_ACK, ack=0))
    assert waiting.opened == [7]
