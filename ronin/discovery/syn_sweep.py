"""The stateless SYN sweep a sweep process runs where it may open raw sockets (CAP_NET_RAW).

No socket, no connection per probe: one raw socket sends a hand-built TCP SYN to each probe
(the kernel adds the IP header) and reads the answers a classic BPF filter lets through (TCP
segments from a swept port to our source port with SYN+ACK or RST set). A SYN-ACK is an open
port, an RST a refused one, silence until the connect timeout a timeout. Our kernel answers
every SYN-ACK with an RST (no socket of ours has that connection), which clears the target's
half-open connection. The source port is reserved by a TCP socket bound to it, so no
connection of this host takes it; each probe's sequence number is a keyed hash of (address,
port), so an answer counts only when its acknowledgement number is that plus one. IPv4 only;
ICMP errors are not read (an unreachable host is a timeout here).

Same inputs and outputs as ``connect_sweep.sweep_block``: the caller picks one.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import os
import select
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Iterator
from itertools import chain

from ronin.discovery.connect_sweep import close_reason
from ronin.discovery.targets import Sweep

SYN, RST, ACK = 0x02, 0x04, 0x10
SYN_ACK = SYN | ACK
_WINDOW = 1024
#: Bytes of an answer the filter keeps: the longest IP header and a TCP header.
_SNAP = 80
#: Sends between two reads of the answers: the receive buffer holds them meanwhile.
_READ_EVERY = 64
_RECEIVE_BUFFER = 4 << 20
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
#: The answer's TCP header fields the sweep reads: ports, sequence, acknowledgement, flags.
_TCP = struct.Struct("!HHIIH")
#: From the IP source address of an answer whose IP header has no options.
_PLAIN_ANSWER = struct.Struct("!I4xHHIIH")
_SYN_HEADER = struct.Struct("!HHIIBBHHH")
_PROBE_KEY = struct.Struct("!IH")

NO_PERMISSION = (
    "RONIN_SWEEP_METHOD=syn needs raw sockets (CAP_NET_RAW): run Ronin as root, or grant its "
    'Python the capability (sudo setcap cap_net_raw+ep "$(readlink -f "$(which python3)")"), '
    "or set RONIN_SWEEP_METHOD=connect (or auto: SYNs only where allowed)"
)


def raw_socket() -> socket.socket:
    """The raw TCP socket the sweep sends and reads with; PermissionError without CAP_NET_RAW."""
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)


def syn_permitted() -> bool:
    """Whether this process may open the raw socket the SYN sweep needs."""
    try:
        raw_socket().close()
    except PermissionError:
        return False
    return True


def syn_sweep_block(
    network: str,
    ports: tuple[int, ...],
    seed: int,
    block: tuple[int, int],
    *,
    timeout_s: float,
    max_in_flight: int,
    per_second: float | None,
) -> tuple[tuple[int, int], list[int], dict[str, int]]:
    """Send a SYN to every probe of ``block``; return the block, its open positions and the
    closed ones counted by reason (refused, timeout, unreachable, error)."""
    sweep = Sweep(ipaddress.ip_network(network), ports, seed)
    if sweep.network.version != 4:
        raise ValueError("the SYN sweep is IPv4 only")
    targets = sweep.targets_between(*block)
    first = next(targets, None)
    if first is None:
        return block, [], {}
    with _Prober(route_source(first[1]), ports, timeout_s) as prober:
        prober.sweep(chain((first,), targets), max_in_flight=max_in_flight, per_second=per_second)
    return block, prober.answers.opened, prober.answers.counts()


def route_source(address: int) -> int:
    """The source address the kernel picks for ``address`` (a connected UDP socket's own
    address: connecting one sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((_text(address), 9))
        return int(ipaddress.IPv4Address(probe.getsockname()[0]))


def checksum_base(source: int, source_port: int) -> int:
    """The part of every SYN's checksum sum that does not depend on its target: the
    pseudo-header's source, protocol and length, our port, data offset and flags, window."""
    return (
        (source >> 16)
        + (source & 0xFFFF)
        + socket.IPPROTO_TCP
        + 20
        + source_port
        + ((5 << 12) | SYN)
        + _WINDOW
    )


def syn_segment(base: int, source_port: int, address: int, port: int, seq: int) -> bytes:
    """A 20-byte TCP SYN to (address, port) with its checksum over the pseudo-header."""
    total = base + (address >> 16) + (address & 0xFFFF) + port + (seq >> 16) + (seq & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return _SYN_HEADER.pack(source_port, port, seq, 0, 5 << 4, SYN, _WINDOW, ~total & 0xFFFF, 0)


def tcp_checksum(source: int, destination: int, segment: bytes) -> int:
    """The ones' complement sum of the pseudo-header and ``segment``: 0xFFFF when the
    segment's own checksum is right (RFC 793), its checksum's complement when that field
    holds zero."""
    pseudo = struct.pack("!IIBBH", source, destination, 0, socket.IPPROTO_TCP, len(segment))
    return ones_sum(pseudo + segment)


def ones_sum(data: bytes) -> int:
    """The 16-bit ones' complement sum of ``data`` (RFC 1071), an odd byte padded with zero."""
    data += b"\0" * (len(data) % 2)
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


#: Jump offsets are 8 bits: past this many ports the filter leaves the port to the sweep.
_MAX_FILTERED_PORTS = 200


def answer_filter(source: int, source_port: int, ports: tuple[int, ...]) -> list[bytes]:
    """A classic BPF program for the raw socket (which sees each packet from its IP header):
    unfragmented TCP to (source, source_port) from one of ``ports``, with SYN+ACK or RST."""
    ld_w, ld_h, ld_b, ldx_msh = 0x20, 0x28, 0x30, 0xB1  # absolute loads; X = IP header length
    ld_h_x, ld_b_x = 0x48, 0x50  # loads at X + k: the TCP header
    jeq, jset, and_k, ret = 0x15, 0x45, 0x54, 0x06
    program: list[tuple[int, str | int, str | int, int]] = [
        (ld_b, 0, 0, 9),
        (jeq, 0, "drop", socket.IPPROTO_TCP),
        (ld_h, 0, 0, 6),
        (jset, "drop", 0, 0x1FFF),  # a fragment past the first
        (ld_w, 0, 0, 16),
        (jeq, 0, "drop", source),
        (ldx_msh, 0, 0, 0),
        (ld_h_x, 0, 0, 2),
        (jeq, 0, "drop", source_port),
    ]
    if len(ports) <= _MAX_FILTERED_PORTS:
        program.append((ld_h_x, 0, 0, 0))
        program += [(jeq, "flags", 0, port) for port in ports]
        program.append((ret, 0, 0, 0))
    labels = {"flags": len(program), "accept": len(program) + 4, "drop": len(program) + 5}
    program += [
        (ld_b_x, 0, 0, 13),
        (jset, "accept", 0, RST),
        (and_k, 0, 0, SYN_ACK),
        (jeq, "accept", "drop", SYN_ACK),
        (ret, 0, 0, _SNAP),
        (ret, 0, 0, 0),
    ]
    code = []
    for at, (op, jt, jf, k) in enumerate(program):
        true = labels[jt] - at - 1 if isinstance(jt, str) else jt
        false = labels[jf] - at - 1 if isinstance(jf, str) else jf
        code.append(struct.pack("HBBI", op, true, false, k))
    return code


def attach_filter(sock: socket.socket, code: list[bytes]) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program, so the buffer need live no longer."""
    program = ctypes.create_string_buffer(b"".join(code))
    fprog = struct.pack("HP", len(code), ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


class Answers:
    """The probes of a block awaiting an answer, and what the answers said; no sockets, so
    the verification can be tested on crafted packets."""

    def __init__(self, source_port: int) -> None:
        self.source_port = source_port
        #: (address << 16 | port) -> (position, sequence number sent)
        self.pending: dict[int, tuple[int, int]] = {}
        self.opened: list[int] = []
        self.closed: Counter[str] = Counter()
        self.refused = 0

    def counts(self) -> dict[str, int]:
        """The closed probes by reason."""
        counts = self.closed + Counter(refused=self.refused)
        return dict(counts)

    def take(self, packet: bytes | bytearray | memoryview) -> None:
        """One packet from the raw socket (IP header first): settle the probe it answers,
        if it answers one, with the acknowledgement number that probe's SYN asks for."""
        if len(packet) < 20:
            return
        header = (packet[0] & 0x0F) * 4
        if header == 20 and len(packet) >= 34:
            address, sport, dport, _, ack, flags = _PLAIN_ANSWER.unpack_from(packet, 12)
        elif len(packet) >= header + 14:
            (address,) = struct.unpack_from("!I", packet, 12)
            sport, dport, _, ack, flags = _TCP.unpack_from(packet, header)
        else:
            return
        if dport != self.source_port or not flags & ACK:
            return
        key = address << 16 | sport
        entry = self.pending.get(key)
        if entry is None or ack != (entry[1] + 1) & 0xFFFFFFFF:
            return  # not ours, a repeat, or forged
        if flags & RST:
            self.refused += 1
        elif flags & SYN_ACK == SYN_ACK:
            self.opened.append(entry[0])
        else:
            return
        del self.pending[key]


class _Prober:
    """The raw socket, the reserved source port, the per-block secret and the deadlines."""

    def __init__(self, source: int, ports: tuple[int, ...], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.source = source
        self._reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock: socket.socket | None = None
        try:
            self._reserved.bind((_text(source), 0))  # bound, never listening: no one else's
            self.source_port = self._reserved.getsockname()[1]
            self.sock = raw_socket()
            self.sock.bind((_text(source), 0))  # every SYN leaves from ``source``
            attach_filter(self.sock, answer_filter(source, self.source_port, ports))
            _grow_receive_buffer(self.sock)
        except BaseException:
            self.close()
            raise
        self.answers = Answers(self.source_port)
        self._key = hashlib.blake2s(key=os.urandom(16), digest_size=4)
        self._base = checksum_base(source, self.source_port)
        self._deadlines: deque[tuple[float, int, tuple[int, int]]] = deque()
        self._buffer = bytearray(_SNAP)
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN)
        self._drain()  # what came before the filter did

    def __enter__(self) -> _Prober:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self._reserved.close()

    def sweep(
        self,
        targets: Iterator[tuple[int, int, int]],
        *,
        max_in_flight: int,
        per_second: float | None,
    ) -> None:
        """Send the SYN of every target (in this one loop: the per-probe path of the sweep),
        read the answers every few sends, and wait until each is answered or timed out."""
        assert self.sock is not None
        sendto, new_digest, pack_key = self.sock.sendto, self._key.copy, _PROBE_KEY.pack
        base, source_port, timeout_s = self._base, self.source_port, self.timeout_s
        pending, deadlines, monotonic = self.answers.pending, self._deadlines, time.monotonic
        from_bytes, text = int.from_bytes, socket.inet_ntoa
        started, count, unread = monotonic(), 0, 0
        for position, address, port in targets:
            if per_second:
                count += 1
                while (ahead := started + count / per_second - monotonic()) > 0:
                    self.wait(ahead)
            digest = new_digest()
            digest.update(pack_key(address, port))
            seq = from_bytes(digest.digest(), "big")
            segment = syn_segment(base, source_port, address, port, seq)
            destination = (text(address.to_bytes(4, "big")), 0)
            try:
                sendto(segment, destination)
            except OSError as exc:
                if not self._send_again(segment, destination, exc):
                    continue
            key = address << 16 | port
            entry = (position, seq)
            pending[key] = entry
            deadlines.append((monotonic() + timeout_s, key, entry))
            unread += 1
            if unread >= _READ_EVERY or len(pending) >= max_in_flight:
                unread = 0
                self._drain()
                while len(pending) >= max_in_flight:
                    self.wait(timeout_s)
        while pending:
            self.wait(timeout_s)

    def _send_again(self, segment: bytes, destination: tuple[str, int], error: OSError) -> bool:
        """A send the kernel refused: once more after a moment if its queue was full (True
        once sent); otherwise the probe is closed for the reason the kernel gave."""
        assert self.sock is not None
        if error.errno in (errno.EAGAIN, errno.ENOBUFS):
            time.sleep(0.001)
            try:
                self.sock.sendto(segment, destination)
            except OSError as again:
                error = again
            else:
                return True
        self.answers.closed[close_reason(error.errno or 0)] += 1
        return False

    def wait(self, limit_s: float) -> None:
        """Take the answers that come within ``limit_s`` (or until the next deadline), then
        count the probes whose deadline has passed as timed out."""
        pending, deadlines = self.answers.pending, self._deadlines
        self._drain()
        while deadlines and pending.get(deadlines[0][1]) is not deadlines[0][2]:
            deadlines.popleft()  # answered already
        if not deadlines:
            return
        wait_s = min(limit_s, deadlines[0][0] - time.monotonic())
        if wait_s > 0 and self._poller.poll(wait_s * 1000):
            self._drain()
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, key, entry = deadlines.popleft()
            if pending.get(key) is entry:
                del pending[key]
                self.answers.closed["timeout"] += 1

    def _drain(self) -> None:
        assert self.sock is not None
        receive, buffer, take = self.sock.recv_into, self._buffer, self.answers.take
        view = memoryview(buffer)
        while True:
            try:
                size = receive(buffer, _SNAP, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            take(view[:size])


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Room for the answers between two reads (SO_RCVBUFFORCE passes rmem_max with
    CAP_NET_ADMIN; without it SO_RCVBUF gets what rmem_max allows)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)


def _text(address: int) -> str:
    return socket.inet_ntoa(address.to_bytes(4, "big"))
