"""A real DNS server on loopback, in this process, for DNS-SD tests.

It serves a zone given as a mapping ``(name, rdtype) -> [rdata text, ...]`` over UDP and TCP on
the same port (``127.0.0.1``, port 0: the kernel picks), as an authoritative server would:
NXDOMAIN for a name it does not know, an empty NOERROR for a name it knows without that type,
and a UDP answer larger than the query's EDNS payload (512 bytes without EDNS) truncated with
TC set, so the client asks again over TCP. A name can be told to misbehave (``BEHAVIOURS``), and
every query is counted, so a test can assert what was asked and how.

Every wait here is bounded and ``close()`` is prompt, whatever a client left half done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[tuple[str, str], Sequence[str]]

#: What a misbehaving name does:
#: ``silent``: never answers, over UDP or TCP (the client times out);
#: ``servfail``: answers SERVFAIL;
#: ``garbage``: answers bytes that are not a DNS message (over UDP, dnspython drops them as
#: noise, so the client times out);
#: ``garbage_over_tcp``: answers over UDP with TC set, then garbage over TCP.
BEHAVIOURS: Final = ("silent", "servfail", "garbage", "garbage_over_tcp")
TTL: Final = 60
#: The largest UDP answer to a query without EDNS (RFC 1035 4.2.1).
CLASSIC_UDP_SIZE: Final = 512
#: How long ``close()`` waits for connection tasks and listeners once it has cancelled them.
CLOSE_TIMEOUT_S: Final = 2.0
#: A TCP client that sends nothing for this long is dropped.
IDLE_TIMEOUT_S: Final = 10.0
_BIND_ATTEMPTS: Final = 20


class DnsServer:
    """An authoritative server for ``zone``; ``queries`` counts (name, type) asked, ``tcp``
    counts those asked over TCP, ``arrivals`` lists them with their ``time.monotonic()``.
    Names are lower-case, without the trailing dot."""

    def __init__(self, zone: Zone, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.queries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.tcp: collections.Counter[tuple[str, str]] = collections.Counter()
        self.arrivals: list[tuple[float, tuple[str, str]]] = []
        self.behaviours: dict[str, str] = {}
        self._rrsets: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        self._names: set[dns.name.Name] = set()
        for (name, rdtype), texts in zone.items():
            self._add(name, rdtype, texts)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens, as ``ronin.discovery.dns_sd.new_resolver`` takes it."""
        return self.host, self.port

    def misbehave(self, name: str, behaviour: str) -> None:
        """Make every query for ``name`` (any type) do ``behaviour`` instead of answering."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        self.behaviours[_key(dns.name.from_text(name))] = behaviour

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on UDP and TCP on one free port (a UDP port whose TCP twin is free)."""
        loop = asyncio.get_running_loop()
        for _ in range(_BIND_ATTEMPTS):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, 0)
            )
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._connection, self.host, port)
            except OSError as exc:
                transport.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._udp, self.port = transport, port
            return
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {self.host}")

    async def close(self) -> None:
        """Stop now: listeners closed, connection tasks cancelled, sockets aborted."""
        self._closing = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), CLOSE_TIMEOUT_S)

    def answer(self, wire: bytes, *, over_tcp: bool) -> bytes | None:
        """The answer to one query as bytes, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a query: a real server drops it too
        if len(query.question) != 1 or query.flags & dns.flags.QR:
            return None
        question = query.question[0]
        name, rdtype = question.name, dns.rdatatype.RdataType(question.rdtype)
        key = (_key(name), dns.rdatatype.to_text(rdtype))
        self.queries[key] += 1
        self.arrivals.append((time.monotonic(), key))
        if over_tcp:
            self.tcp[key] += 1
        behaviour = self.behaviours.get(key[0])
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if behaviour == "silent":
            return None
        if behaviour == "garbage" or (behaviour == "garbage_over_tcp" and over_tcp):
            return wire[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00\xff\xfe\xfd"
        if behaviour == "garbage_over_tcp":
            response.flags |= dns.flags.TC
            return response.to_wire()
        if behaviour == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self._rrsets:
            response.answer.append(self._rrsets[(name, rdtype)])
        elif not any(known.is_subdomain(name) for known in self._names):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if over_tcp:
            return response.to_wire(max_size=65535)  # not the UDP payload the query announced
        limit = query.payload if query.edns >= 0 else CLASSIC_UDP_SIZE
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _add(self, name: str, rdtype: str, texts: Sequence[str]) -> None:
        rrset = dns.rrset.from_text_list(
            dns.name.from_text(name),
            TTL,
            dns.rdataclass.IN,
            rdtype,
            texts,
            origin=dns.name.root,  # a name in rdata text may omit the final dot
            relativize=False,
        )
        self._rrsets[(rrset.name, dns.rdatatype.RdataType(rrset.rdtype))] = rrset
        self._names.add(rrset.name)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.transport.abort()
            return
        self._tasks.add(task)
        try:
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(length)
                reply = self.answer(wire, over_tcp=True)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or went quiet
        except asyncio.CancelledError:
            # close() cancelled us. End normally: Python 3.11's start_server callback calls
            # task.exception() on a cancelled task and logs the CancelledError it raises.
            if not self._closing:
                raise
        finally:
            self._tasks.discard(task)
            writer.transport.abort()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport is not a DatagramTransport subclass: no isinstance.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self._server.answer(data, over_tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


def _key(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()
