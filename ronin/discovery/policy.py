"""The scope policy (PROTOCOL.md section 6): which addresses a Ronin may ever probe.

Checked before the first packet of a job and again for every peer, redirect and resolved
address. Some ranges stay refused whatever the allowed networks say, unless the operator
names them (or a part of them) explicitly: ``0.0.0.0/8``, ``169.254.0.0/16`` (where cloud
metadata lives), multicast and broadcast.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ronin.config import Settings
from ronin.errors import ForbiddenTarget, InvalidValue

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A network as integers, its IP version, first address and last address: what the checks
#: compare (``ipaddress``'s own ``subnet_of`` costs twenty times more, per job submitted).
Span = tuple[int, int, int]

#: Private ranges, loopback and IPv6 unique-local: a home or office network, nothing public.
DEFAULT_ALLOW = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "::1/128",
    "fc00::/7",
)
ALWAYS_REFUSED = (
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "ff00::/8",
)
DEFAULT_MAX_PREFIX_V4 = 16
DEFAULT_MAX_PREFIX_V6 = 112


def parse_networks(text: str, *, field: str) -> tuple[Network, ...]:
    """A comma-separated list of CIDRs, e.g. ``RONIN_ALLOW``."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise InvalidValue(f"{field}: {item!r} is not a network ({exc})", field=field) from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class ScopePolicy:
    """Allowed networks, and the largest target a job may name."""

    allowed: tuple[Network, ...]
    max_prefix_v4: int = DEFAULT_MAX_PREFIX_V4
    max_prefix_v6: int = DEFAULT_MAX_PREFIX_V6
    _allowed_spans: tuple[Span, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed_spans", tuple(span(n) for n in self.allowed))

    @classmethod
    def default(cls) -> ScopePolicy:
        return cls(parse_networks(",".join(DEFAULT_ALLOW), field="RONIN_ALLOW"))

    @classmethod
    def from_settings(cls, settings: Settings) -> ScopePolicy:
        """``RONIN_ALLOW`` and the target size limits, or the defaults."""
        allow = settings.allow if settings.allow is not None else ",".join(DEFAULT_ALLOW)
        return cls(
            parse_networks(allow, field="RONIN_ALLOW"),
            max_prefix_v4=settings.max_target_prefix_v4,
            max_prefix_v6=settings.max_target_prefix_v6,
        )

    def allows(self, address: Address | str) -> bool:
        """True if ``address`` may be probed."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket sends IPv4 packets to it
        carried = _nat64_ipv4(ip)
        if carried is not None and not self._covers(4, int(carried), int(carried)):
            return False  # through a NAT64 gateway: both addresses must be allowed
        return self._covers(ip.version, int(ip), int(ip))

    def check_target(self, network: Network) -> None:
        """Refuse a job target outside the policy, before any packet (``FORBIDDEN_TARGET``)."""
        limit = self.max_prefix_v4 if network.version == 4 else self.max_prefix_v6
        if network.prefixlen < limit:
            raise ForbiddenTarget(
                f"{network} is larger than the largest target allowed (a /{limit}); "
                "split it or raise the limit",
                field="target.value",
            )
        if not self._covers(*span(network)):
            raise ForbiddenTarget(
                f"{network} is outside the networks this Ronin may probe "
                f"({', '.join(str(n) for n in self.allowed) or 'none'}; set RONIN_ALLOW)",
                field="target.value",
            )

    def _covers(self, version: int, first: int, last: int) -> bool:
        """The addresses ``first`` to ``last`` are inside one allowed network; and inside an
        always-refused range only where an allowed network within that range names it
        explicitly."""
        granting = [
            (low, high)
            for kind, low, high in self._allowed_spans
            if kind == version and low <= first and last <= high
        ]
        if not granting:
            return False
        return all(
            any(refused_low <= low and high <= refused_high for low, high in granting)
            for kind, refused_low, refused_high in _REFUSED_SPANS
            if kind == version and first <= refused_high and refused_low <= last
        )


def span(network: Network) -> Span:
    """``network`` as its version, first address and last address (from the prefix length:
    ``num_addresses`` would build the broadcast address first)."""
    first = int(network.network_address)
    return network.version, first, first + (1 << (network.max_prefixlen - network.prefixlen)) - 1


def _nat64_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host a NAT64 address (the well-known prefix ``64:ff9b::/96``) reaches."""
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED_SPANS: tuple[Span, ...] = tuple(span(ipaddress.ip_network(n)) for n in ALWAYS_REFUSED)
