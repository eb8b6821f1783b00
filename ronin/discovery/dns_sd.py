"""DNS-SD for a ``domain`` target (PROTOCOL.md section 3): SRV and TXT at ``_kos._tcp.<domain>``.

A lookup asks the configured resolver (``RONIN_DNS``, or the system's) for the SRV and TXT
records at ``_kos._tcp.<domain>`` at once, then for the A and AAAA records of every SRV target
at once, with the same resolver; the additional section of an answer is never trusted for
addresses. Everything is bounded: each question by the resolver's lifetime, at most 64 targets
and 16 addresses per target. Nothing raises: NXDOMAIN and "no such record" mean "no DNS-SD
here" (no target, no failure: the caller then fetches ``https://<domain>/.well-known/kos-node``),
while timeouts, SERVFAIL and malformed answers become short reasons in ``failures``, each
``reason`` or ``reason:<host>`` (so ``partition(":")`` gives what to count).

DNS-SD gives a host and a port, like mDNS, not a URL: an SRV target is probed over plain
``http://<address>:<port><path>``, at each address it resolves to that the scope policy allows,
with ``path`` from the TXT record when it is a safe absolute path. The descriptor fetched there
is authoritative; the TXT ``node_id`` and ``node_class`` are hints only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.SRV import SRV

from ronin.discovery.descriptor import base_url, safe_path
from ronin.errors import InvalidValue

SERVICE = "_kos._tcp"
DNS_PORT = 53
#: How long one question (SRV, TXT, A or AAAA; every retry included) may take.
DEFAULT_TIMEOUT_S = 3.0
#: How long one attempt at one question waits before dnspython retries.
ATTEMPT_TIMEOUT_S = 1.0
#: dnspython may sleep a backoff past the lifetime before it notices; this caps the overshoot.
LIFETIME_GRACE_S = 0.5
#: The EDNS payload announced (DNS flag day 2020): larger answers come back truncated, over TCP.
EDNS_PAYLOAD = 1232
MAX_TARGETS = 64
MAX_ADDRESSES = 16
MAX_TXT_ENTRIES = 64
MAX_TXT_KEY_CHARS = 64

_PORT = re.compile(r"[0-9]{1,5}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*")  # dnspython caps length
_TXT_KEY = re.compile(r"[\x21-\x3c\x3e-\x7e]+")  # printable US-ASCII but "=" (RFC 6763 6.4)


@dataclass(frozen=True, slots=True)
class SrvTarget:
    """One SRV record's target, with the addresses it resolves to (empty if none)."""

    host: str
    port: int
    priority: int
    weight: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DomainRecords:
    """What DNS says about ``_kos._tcp.<domain>``, and what went wrong asking."""

    targets: tuple[SrvTarget, ...] = ()
    txt: dict[str, str] = field(default_factory=dict)
    failures: tuple[str, ...] = ()


def parse_nameserver(text: str) -> tuple[str, int]:
    """``RONIN_DNS`` as an operator writes it: an IP address, with a port after ``:`` (IPv4)
    or ``]:`` (IPv6 in brackets); port 53 when none is given."""
    value = text.strip()
    host, port_text = value, ""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad_nameserver(text, "an IPv6 address with a port is written [::1]:5353")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise _bad_nameserver(text, "a port is missing after ':'")
    elif value.count(":") == 1:  # IPv4 with a port; two or more colons: a bare IPv6 address
        host, _, port_text = value.partition(":")
        if not port_text:
            raise _bad_nameserver(text, "a port is missing after ':'")
    if "%" in host:
        raise _bad_nameserver(text, "a scoped IPv6 address (with %zone) is not supported")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _bad_nameserver(text, "not an IP address (a name cannot bootstrap DNS)") from None
    if value.startswith("[") and address.version != 6:
        raise _bad_nameserver(text, "brackets are for IPv6 addresses only")
    if not port_text:
        return str(address), DNS_PORT
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _bad_nameserver(text, f"port {port_text!r} is not a number from 1 to 65535")
    return str(address), int(port_text)


def _bad_nameserver(text: str, why: str) -> InvalidValue:
    return InvalidValue(
        f"RONIN_DNS {text[:100]!r} is not a nameserver: {why} "
        "(e.g. 127.0.0.1, 127.0.0.1:5353, ::1 or [::1]:5353)",
        field="RONIN_DNS",
    )


def new_resolver(
    nameserver: tuple[str, int] | None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dns.asyncresolver.Resolver:
    """A resolver asking only ``nameserver`` (``/etc/resolv.conf`` unread), or, without one,
    the system's nameservers; each question bounded by ``timeout_s``, retries included.

    A system without any nameserver configured gets a resolver with none, whose questions
    fail as ``dns_no_nameservers`` instead of failing here.
    """
    if nameserver is not None:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*nameserver)]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.lifetime = timeout_s
    resolver.timeout = min(ATTEMPT_TIMEOUT_S, timeout_s)
    resolver.cache = None  # a job asks each name once; a stale answer would outlive a re-run
    resolver.retry_servfail = False
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    return resolver


async def lookup(domain: str, resolver: dns.asyncresolver.Resolver) -> DomainRecords:
    """SRV and TXT at ``_kos._tcp.<domain>``, then the addresses of each SRV target."""
    failures: list[str] = []
    try:
        service = dns.name.from_text(f"{SERVICE}.{domain.rstrip('.')}")
    except dns.exception.DNSException:
        return DomainRecords(failures=("dns_bad_name",))
    srv_answer, txt_answer = await asyncio.gather(
        _ask(resolver, service, dns.rdatatype.SRV), _ask(resolver, service, dns.rdatatype.TXT)
    )
    for answer in (srv_answer, txt_answer):
        if isinstance(answer, str):
            failures.append(answer)
    txt: dict[str, str] = {}
    if not isinstance(txt_answer, str):
        txt = _decode_txt(r for r in txt_answer if isinstance(r, TXT))
        if "path" in txt and descriptor_path(txt) != txt["path"]:
            failures.append("txt_unsafe_path")
    records: list[SRV] = []
    if not isinstance(srv_answer, str):
        records = _usable_srv((r for r in srv_answer if isinstance(r, SRV)), failures)
    if len(records) > MAX_TARGETS:
        failures.append("srv_targets_capped")
        records = records[:MAX_TARGETS]
    resolved = await asyncio.gather(*(_resolve_target(resolver, r) for r in records))
    for _, target_failures in resolved:
        failures.extend(target_failures)  # in target order, whichever answered first
    targets = tuple(target for target, _ in resolved)
    return DomainRecords(targets, txt, tuple(dict.fromkeys(failures)))


def descriptor_path(txt: dict[str, str]) -> str:
    """The TXT ``path`` when it is a safe absolute path, else ``/.well-known/kos-node``."""
    return safe_path(txt.get("path"))


def descriptor_urls(
    records: DomainRecords, allows: Callable[[str], bool]
) -> tuple[list[str], list[str]]:
    """The descriptor URLs to probe (``http://<address>:<port><path>``, in target order) for
    the addresses ``allows`` accepts, and the addresses it refused; each listed once."""
    path = descriptor_path(records.txt)
    urls: dict[str, None] = {}
    refused: dict[str, None] = {}
    for target in records.targets:
        for address in target.addresses:
            if not allows(address):
                refused[address] = None
                continue
            urls[f"{base_url(address, target.port)}{path}"] = None
    return list(urls), list(refused)


_Result = dns.resolver.Answer | tuple[()] | str


async def _ask(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> _Result:
    """The answer; ``()`` for NXDOMAIN or no such record; a failure reason for anything else."""
    try:
        async with asyncio.timeout(resolver.lifetime + LIFETIME_GRACE_S):
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    except (dns.exception.Timeout, TimeoutError):
        return "dns_timeout"
    except dns.resolver.NoNameservers as exc:
        return _no_nameservers_reason(exc)
    except dns.resolver.YXDOMAIN:
        return "dns_yxdomain"
    except dns.exception.DNSException:
        return "dns_error"
    except OSError:
        return "dns_unreachable"
    return () if answer.rrset is None else answer


def _no_nameservers_reason(exc: dns.resolver.NoNameservers) -> str:
    """Why every nameserver failed, from the errors dnspython collected (the last one wins:
    a UDP answer truncated, then garbage over TCP, is malformed)."""
    errors = exc.kwargs.get("errors") or []
    if not errors:
        return "dns_no_nameservers"
    error = errors[-1][3]
    if isinstance(error, str):  # an rcode: SERVFAIL, REFUSED, NOTIMP, FORMERR...
        return f"dns_{error.lower()}"
    if isinstance(error, dns.exception.Timeout | TimeoutError):
        return "dns_timeout"
    if isinstance(error, dns.exception.DNSException | EOFError | ValueError):
        return "dns_malformed"
    if isinstance(error, OSError):
        return "dns_unreachable"
    return "dns_error"


def _decode_txt(records: Iterable[TXT]) -> dict[str, str]:
    """``key=value`` strings, keys lower-cased, the first of a key kept (RFC 6763 6.4);
    entries without ``=``, undecodable, with control characters or past the caps dropped."""
    entries: dict[str, str] = {}
    strings = [string for record in records for string in record.strings]
    for raw in strings[:MAX_TXT_ENTRIES]:
        key_bytes, equals, value_bytes = raw.partition(b"=")
        try:
            key = key_bytes.decode("ascii").lower()
            value = value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not equals or len(key) > MAX_TXT_KEY_CHARS or not _TXT_KEY.fullmatch(key):
            continue
        if value.isprintable():
            entries.setdefault(key, value)
    return entries


def _usable_srv(records: Iterable[SRV], failures: list[str]) -> list[SRV]:
    """SRV records sorted by priority, then weight descending, each target and port once;
    ``.`` (RFC 2782: no service here) dropped, unusable ones dropped with a reason."""
    usable: dict[tuple[str, int], SRV] = {}
    for record in records:
        if record.target == dns.name.root:
            continue
        host = _host(record.target)
        if not _HOSTNAME.fullmatch(host):
            failures.append("srv_bad_target")
        elif record.port == 0:
            failures.append(f"srv_bad_port:{host}")
        else:
            usable.setdefault((host, record.port), record)
    return sorted(usable.values(), key=lambda r: (r.priority, -r.weight, _host(r.target), r.port))


async def _resolve_target(
    resolver: dns.asyncresolver.Resolver, record: SRV
) -> tuple[SrvTarget, list[str]]:
    """The target with its A and AAAA addresses (asked at once, at most 16), and failures."""
    host = _host(record.target)
    addresses, failures = await _addresses(resolver, record.target)
    target = SrvTarget(
        host=host,
        port=record.port,
        priority=record.priority,
        weight=record.weight,
        addresses=tuple(addresses),
    )
    return target, failures


async def addresses(host: str, resolver: dns.asyncresolver.Resolver) -> tuple[list[str], list[str]]:
    """The A and AAAA addresses of ``host`` (IPv4 first, at most 16), and failures."""
    try:
        name = dns.name.from_text(host.rstrip("."))
    except dns.exception.DNSException:
        return [], ["dns_bad_name"]
    return await _addresses(resolver, name)


async def _addresses(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name
) -> tuple[list[str], list[str]]:
    host = _host(name)
    answers = await asyncio.gather(
        _ask(resolver, name, dns.rdatatype.A),
        _ask(resolver, name, dns.rdatatype.AAAA),
    )
    failures: list[str] = []
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for answer in answers:
        if isinstance(answer, str):
            failures.append(f"{answer}:{host}")
        else:
            found.update(ipaddress.ip_address(r.to_text()) for r in answer)
    # Sorted (IPv4 first): an RRset has no order (RFC 2181 5), so the cap keeps the same ones.
    ordered = [str(a) for a in sorted(found, key=lambda a: (a.version, a))]
    if not ordered and not any(isinstance(answer, str) for answer in answers):
        failures.append(f"srv_target_unresolvable:{host}")
    if len(ordered) > MAX_ADDRESSES:
        failures.append(f"srv_addresses_capped:{host}")
    return ordered[:MAX_ADDRESSES], failures


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()
