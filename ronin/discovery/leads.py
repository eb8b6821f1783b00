"""Where a job's first level comes from when it is not a sweep: the instances announced on the
local link (mDNS), a domain's SRV records (DNS-SD), a did:web document (PROTOCOL.md sections 3
and 4). Each gives *leads*: nodes worth a probe, with how they were found. Nothing here is
trusted: every lead is confirmed by its descriptor, and only addresses in scope become leads.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from ronin.discovery import did_web
from ronin.discovery.descriptor import DESCRIPTOR_PATH, base_url
from ronin.discovery.http_probe import Failed
from ronin.discovery.policy import ScopePolicy

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Lead:
    """A node to probe: its base URL, how it was found, where its descriptor is, and the DID
    it must turn out to be (a DID target's node)."""

    url: str
    method: str
    path: str = DESCRIPTOR_PATH
    expected_node_id: str | None = None


@dataclass(slots=True)
class Leads:
    """The leads found, and why some were not (short reasons, counted as failed probes)."""

    found: list[Lead] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Set when the target itself could not be resolved (a did:web document): the message.
    unresolved: str | None = None


async def from_mdns(
    window_s: float,
    interfaces: Sequence[str],
    policy: ScopePolicy,
    network: Network | None,
) -> Leads:
    """Browse ``_kos._tcp.local.``: one lead per instance, at its first address in scope (and
    in ``network`` for a network target); one instance with IPv4 and IPv6 is one node."""
    from ronin.discovery import mdns  # zeroconf: only for a job that asks for mDNS

    leads = Leads()
    try:
        instances = await mdns.browse(window_s, interfaces=interfaces or None)
    except (OSError, ValueError) as exc:
        logger.warning("mDNS is unavailable: %s", exc)
        leads.failures.append("mdns_unavailable")
        return leads
    for instance in instances:
        allowed = [
            address
            for address in instance.addresses
            if policy.allows(address)
            and (network is None or ipaddress.ip_address(address) in network)
        ]
        if not allowed:
            leads.failures.append("mdns_out_of_scope")
            continue
        url = base_url(allowed[0], instance.port)
        leads.found.append(Lead(url, "mdns_advertisement", instance.path))
    return leads


async def from_domain(
    domain: str, protocols: Sequence[str], resolver: Resolver, policy: ScopePolicy
) -> Leads:
    """DNS-SD first (SRV and TXT at ``_kos._tcp.<domain>``), one lead per SRV target at its
    first address in scope; with no SRV target at all (or without ``dns-sd`` asked), the
    domain's own ``https://<domain>/.well-known/kos-node``."""
    from ronin.discovery import dns_sd  # dnspython: only for a domain target

    leads = Leads()
    fallback = [Lead(f"https://{domain}", "http_probe")] if "http-api" in protocols else []
    if "dns-sd" not in protocols:
        leads.found = fallback
        return leads
    records = await dns_sd.lookup(domain, resolver)
    leads.failures += [failure.partition(":")[0] for failure in records.failures]
    if not records.targets:
        leads.found = fallback
        return leads
    path = dns_sd.descriptor_path(records.txt)
    for target in records.targets:
        allowed = [address for address in target.addresses if policy.allows(address)]
        leads.failures += ["dns_answer_out_of_scope"] * (len(target.addresses) - len(allowed))
        if allowed:
            leads.found.append(Lead(base_url(allowed[0], target.port), "dns_srv", path))
    return leads


async def from_did_web(
    session: aiohttp.ClientSession, did: str, policy: ScopePolicy, *, total_timeout_s: float
) -> Leads:
    """The KosNode endpoints of a did:web document, each of which must turn out to be ``did``."""
    resolved = await did_web.resolve(session, did, policy, total_timeout_s=total_timeout_s)
    if isinstance(resolved, Failed):
        return Leads(failures=[resolved.reason], unresolved=resolved.message)
    return Leads(
        found=[Lead(url, "did_resolution", expected_node_id=did) for url in resolved.endpoints]
    )
