"""The discovery executor: what a worker runs for each discovery job."""

from __future__ import annotations

from functools import partial

from ronin.config import Settings
from ronin.discovery.crawl import DiscoveryOptions, run_discovery
from ronin.discovery.crawl_state import CrawlReport
from ronin.discovery.http_probe import tls_context
from ronin.discovery.params import DEFAULT_CONCURRENCY, DEFAULT_RATE
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.sweep import open_ports
from ronin.jobs.context import JobContext
from ronin.jobs.executor import Executor


def discovery_executor(settings: Settings) -> Executor:
    """An executor bound to this node's scope policy; each job may set its own pace."""
    policy = ScopePolicy.from_settings(settings)
    ssl_context = tls_context(settings.ca_bundle)
    dns = None
    if settings.dns:  # dnspython is loaded for a nameserver, or a domain's job, only
        from ronin.discovery import dns_sd

        nameserver = dns_sd.parse_nameserver(settings.dns)
        dns = dns_sd.new_resolver(nameserver) if nameserver else None

    async def discover(context: JobContext) -> CrawlReport:
        params = context.params
        options = DiscoveryOptions(
            policy=policy,
            concurrency=params.concurrency or DEFAULT_CONCURRENCY,
            rate=DEFAULT_RATE if params.rate is None else (params.rate or None),
            ssl_context=ssl_context,
            peers=settings.peers,
            dns=dns,
            mdns_interfaces=settings.mdns_interfaces,
            open_ports=partial(open_ports, method=settings.sweep_method),
        )
        return await run_discovery(context, options)

    return discover
