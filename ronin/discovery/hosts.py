"""One reading of a URL's host, for the scope check and the connection alike.

A host can be spelled many ways that a client quietly normalises: fullwidth digits and dots
(U+FF11 for ``1``, U+3002 for ``.``), IDNA mappings (a circled letter for a plain one), the
short, decimal, octal and hex forms of IPv4 that ``inet_aton`` accepts (``127.1``,
``2134966273``, ``0x7f.0x41.0.1``), userinfo (``http://allowed@elsewhere/``), zone ids. If
the scope check reads one host and the HTTP client connects to another, the policy is
bypassed (issue 10). So Ronin accepts a host only
when it is written the one way the client reads it: a canonical IPv4 dotted quad, an IPv6
address in brackets, or an ASCII DNS name (IDNs in their ``xn--`` form); anything the client
would turn into something else is refused with a reason, before any packet.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import yarl

from ronin.discovery.probe_failure import ProbeFailure

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048  # PROTOCOL.md section 1: an endpoint
MAX_NAME_CHARS = 253
DEFAULT_PORTS = {"http": 80, "https": 443}

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# WHATWG's "ends in a number": a host whose last label is numeric is read as IPv4 by browsers
# and by inet_aton, whatever its other labels say.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class UnsafeUrl(ProbeFailure, ValueError):
    """A URL Ronin will not connect to; ``reason`` is the short name counted in results."""


@dataclass(frozen=True, slots=True)
class ProbeUrl:
    """An http(s) URL read the way the HTTP client will read it."""

    scheme: str
    #: The host as the client connects to it: a lower-case name, or an address's text.
    host: str
    port: int
    #: The host's address when the URL names one; None for a name (resolved, then checked).
    address: Address | None

    @property
    def origin(self) -> str:
        """``scheme://host:port``, IPv6 in brackets: one spelling per node."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_probe_url(url: str) -> ProbeUrl:
    """Read ``url``'s scheme, host and port, or refuse it (``UnsafeUrl``) when its host is
    spelled in a way the client would normalise, or carries userinfo or a zone id."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrl("bad_url", f"a URL over {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeUrl("bad_url", f"not a URL: {url[:200]!r}") from None
    netloc = parts.netloc
    if parts.scheme not in DEFAULT_PORTS or not netloc:
        raise UnsafeUrl("bad_url", f"not an http(s) URL: {url[:200]!r}")
    if "@" in netloc:
        raise UnsafeUrl("userinfo", f"a URL with user info: {url[:200]!r}")
    if "\\" in netloc or not netloc.isascii():
        raise UnsafeUrl("non_canonical_host", f"a host the client would rewrite: {netloc[:200]!r}")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl("bad_url", f"not a valid port: {netloc[:200]!r}") from None
    host, address = _read_host(_raw_host(netloc))
    _same_as_client(url, host)
    return ProbeUrl(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], address)


def _raw_host(netloc: str) -> str:
    """The host part of ``netloc`` as written (no userinfo here), brackets kept."""
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.partition(":")[0]


def _read_host(raw: str) -> tuple[str, Address | None]:
    """The canonical text of a host and its address, if it is one."""
    raw = raw.lower()
    if raw.startswith("["):
        literal = raw.removeprefix("[").removesuffix("]")
        if "%" in literal:
            raise UnsafeUrl("zone_id", f"an IPv6 address with a zone id: {raw[:100]!r}")
        try:
            ipv6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise UnsafeUrl("bad_url", f"not an IPv6 address: {raw[:100]!r}") from None
        return ipv6.compressed, ipv6
    if "%" in raw:
        raise UnsafeUrl("non_canonical_host", f"a percent-encoded host: {raw[:100]!r}")
    if _NUMERIC_LABEL.match(raw.removesuffix(".").rpartition(".")[2]):
        return _dotted_quad(raw)
    name = raw.removesuffix(".")
    if not name or len(name) > MAX_NAME_CHARS or not all(map(_LABEL.match, name.split("."))):
        raise UnsafeUrl("bad_url", f"not a host name: {raw[:100]!r}")
    return raw, None


def _dotted_quad(raw: str) -> tuple[str, Address]:
    """A numeric host must be the one canonical IPv4 spelling, ``a.b.c.d`` in decimal."""
    try:
        ipv4 = ipaddress.IPv4Address(raw)
    except ValueError:
        ipv4 = None
    if ipv4 is None or str(ipv4) != raw:
        raise UnsafeUrl(
            "non_canonical_address",
            f"{raw[:100]!r} is not an IPv4 address in dotted-quad form (a.b.c.d)",
        )
    return raw, ipv4


def _same_as_client(url: str, host: str) -> None:
    """The HTTP client (aiohttp, through yarl) must read the very host Ronin checked."""
    try:
        client_host = (yarl.URL(url).raw_host or "").lower()
    except ValueError:
        raise UnsafeUrl("bad_url", f"not a URL: {url[:200]!r}") from None
    if client_host != host:
        raise UnsafeUrl(
            "non_canonical_host", f"the client would read {host[:100]!r} as {client_host[:100]!r}"
        )
