"""Settings, read once from the ``RONIN_*`` environment."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

import platformdirs
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ronin.errors import InvalidValue

DEFAULT_FRESHNESS_WINDOW = timedelta(hours=24)
DEFAULT_POOL_MAX_SIZE = 10
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATEMENT_TIMEOUT_S = 60.0
DEFAULT_JOB_LEASE = timedelta(seconds=15)
DEFAULT_JOB_MAX_ATTEMPTS = 5
DEFAULT_JOB_TIMEOUT = timedelta(hours=2)
DEFAULT_POLL_INTERVAL = timedelta(seconds=2)
DEFAULT_SHUTDOWN_GRACE = timedelta(seconds=10)
DEFAULT_JOB_RETENTION = timedelta(days=30)
DEFAULT_VERIFY_INTERVAL_S = 60.0
DEFAULT_VERIFY_GUARD_FRACTION = 0.3
DEFAULT_GONE_RETENTION = timedelta(days=7)
DEFAULT_CHANGES_RETENTION = timedelta(hours=24)
DEFAULT_CHANGES_HEARTBEAT_S = 15.0


Scope = Literal["read", "write"]
#: How a network sweep asks "is the port open?" (RONIN_SWEEP_METHOD).
SweepMethod = Literal["auto", "connect", "syn"]
SWEEP_METHODS: tuple[SweepMethod, ...] = ("auto", "connect", "syn")
DEFAULT_SWEEP_METHOD: SweepMethod = "auto"
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_DID = re.compile(r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token the API accepts; ``write`` also allows everything ``read`` does."""

    token: str
    scope: Scope

    def __repr__(self) -> str:  # never print a secret
        return f"ApiToken(scope={self.scope!r})"


@dataclass(frozen=True, slots=True)
class Peer:
    """Another Ronin's API, asked for the endpoints of did:kos nodes it has seen."""

    url: str
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"Peer(url={self.url!r})"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can configure, with the defaults a newcomer gets."""

    database_url: str | None = None
    data_dir: Path = Path(platformdirs.user_data_dir("ronin"))
    freshness_window: timedelta = DEFAULT_FRESHNESS_WINDOW
    pool_max_size: int = DEFAULT_POOL_MAX_SIZE
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S
    job_lease: timedelta = DEFAULT_JOB_LEASE
    job_max_attempts: int = DEFAULT_JOB_MAX_ATTEMPTS
    job_timeout: timedelta = DEFAULT_JOB_TIMEOUT
    poll_interval: timedelta = DEFAULT_POLL_INTERVAL
    shutdown_grace: timedelta = DEFAULT_SHUTDOWN_GRACE
    job_retention: timedelta = DEFAULT_JOB_RETENTION
    #: RONIN_ALLOW as given (comma-separated CIDRs); None keeps the default scope policy.
    allow: str | None = None
    max_target_prefix_v4: int = 16
    max_target_prefix_v6: int = 112
    #: API bearer tokens (RONIN_API_TOKENS: ``scope:token`` pairs, comma-separated).
    api_tokens: tuple[ApiToken, ...] = ()
    #: How long a map read (/v1/services, /v1/nodes) is answered from memory; 0: never.
    api_cache_s: float = 1.0
    #: Above this many pending jobs, the API refuses submissions (429 QUEUE_FULL); 0: no cap.
    max_pending_jobs: int = 100_000
    #: This node's DID, the ``from`` of the KLF messages it sends.
    node_id: str = field(default_factory=lambda: default_node_id())
    #: A remote Ronin's API (RONIN_URL) the operator commands use instead of the database.
    remote_url: str | None = None
    #: The bearer token sent to ``remote_url`` (RONIN_TOKEN).
    remote_token: str | None = None
    #: The DNS server discovery asks (RONIN_DNS: ``host[:port]``); None: the system's.
    dns: str | None = None
    #: Extra trusted roots for TLS (RONIN_CA_BUNDLE: a PEM file), beside the system's.
    ca_bundle: Path | None = None
    #: Other Ronin nodes whose maps resolve did:kos DIDs (RONIN_PEERS).
    peers: tuple[Peer, ...] = ()
    #: Interface addresses mDNS uses (RONIN_MDNS_INTERFACES); empty: every interface.
    mdns_interfaces: tuple[str, ...] = ()
    #: How often each node of the map is re-checked (RONIN_VERIFY_INTERVAL_S); 0: never.
    verify_interval_s: float = DEFAULT_VERIFY_INTERVAL_S
    #: The failure share of a round above which Ronin suspects itself, not the network.
    verify_guard_fraction: float = DEFAULT_VERIFY_GUARD_FRACTION
    #: How long a gone service stays in the map, marked, before it is removed.
    gone_retention: timedelta = DEFAULT_GONE_RETENTION
    #: How long the change feed keeps each change (PROTOCOL.md section 9).
    changes_retention: timedelta = DEFAULT_CHANGES_RETENTION
    #: A change stream with nothing to send sends a heartbeat this often (at most 15 s).
    changes_heartbeat_s: float = DEFAULT_CHANGES_HEARTBEAT_S
    #: Connects, raw SYNs (CAP_NET_RAW, IPv4), or SYNs where allowed (RONIN_SWEEP_METHOD).
    sweep_method: SweepMethod = DEFAULT_SWEEP_METHOD

    @property
    def embedded(self) -> bool:
        """True when Ronin runs its own PostgreSQL rather than an operator's."""
        return self.database_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (the process environment by default)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=parse_database_url(env.get("RONIN_DATABASE_URL", "")),
            data_dir=Path(env["RONIN_DATA_DIR"]).expanduser()
            if env.get("RONIN_DATA_DIR")
            else defaults.data_dir,
            freshness_window=_seconds(env, "RONIN_FRESHNESS_WINDOW_S", defaults.freshness_window),
            pool_max_size=int(_number(env, "RONIN_POOL_MAX_SIZE", defaults.pool_max_size)),
            connect_timeout_s=_number(env, "RONIN_CONNECT_TIMEOUT_S", defaults.connect_timeout_s),
            statement_timeout_s=_number(
                env, "RONIN_STATEMENT_TIMEOUT_S", defaults.statement_timeout_s
            ),
            job_lease=_seconds(env, "RONIN_JOB_LEASE_S", defaults.job_lease),
            job_max_attempts=int(_number(env, "RONIN_JOB_MAX_ATTEMPTS", defaults.job_max_attempts)),
            job_timeout=_seconds(env, "RONIN_JOB_TIMEOUT_S", defaults.job_timeout),
            poll_interval=_seconds(env, "RONIN_POLL_INTERVAL_S", defaults.poll_interval),
            shutdown_grace=_seconds(env, "RONIN_SHUTDOWN_GRACE_S", defaults.shutdown_grace),
            job_retention=_seconds(env, "RONIN_JOB_RETENTION_S", defaults.job_retention),
            allow=env.get("RONIN_ALLOW") or None,
            max_target_prefix_v4=int(
                _number(env, "RONIN_MAX_TARGET_PREFIX_V4", defaults.max_target_prefix_v4)
            ),
            max_target_prefix_v6=int(
                _number(env, "RONIN_MAX_TARGET_PREFIX_V6", defaults.max_target_prefix_v6)
            ),
            api_tokens=parse_tokens(env.get("RONIN_API_TOKENS", "")),
            api_cache_s=_number(env, "RONIN_API_CACHE_S", defaults.api_cache_s, minimum=0),
            max_pending_jobs=int(
                _number(env, "RONIN_MAX_PENDING_JOBS", defaults.max_pending_jobs, minimum=0)
            ),
            node_id=_node_id(env.get("RONIN_NODE_ID") or default_node_id()),
            remote_url=(env.get("RONIN_URL") or "").rstrip("/") or None,
            remote_token=env.get("RONIN_TOKEN") or None,
            dns=env.get("RONIN_DNS") or None,
            ca_bundle=_existing_file(env, "RONIN_CA_BUNDLE"),
            peers=parse_peers(env.get("RONIN_PEERS", "")),
            mdns_interfaces=_addresses(env, "RONIN_MDNS_INTERFACES"),
            verify_interval_s=_number(
                env, "RONIN_VERIFY_INTERVAL_S", defaults.verify_interval_s, minimum=0
            ),
            verify_guard_fraction=_fraction(
                env, "RONIN_VERIFY_GUARD_FRACTION", defaults.verify_guard_fraction
            ),
            gone_retention=_seconds(env, "RONIN_GONE_RETENTION_S", defaults.gone_retention),
            changes_retention=_seconds(
                env, "RONIN_CHANGES_RETENTION_S", defaults.changes_retention
            ),
            changes_heartbeat_s=_heartbeat(env, defaults.changes_heartbeat_s),
            sweep_method=_sweep_method(env, defaults.sweep_method),
        )


DATABASE_URL_FORM = (
    "a postgresql:// URL (postgresql://user:password@host:5432/dbname) "
    "or key=value settings (host=... dbname=...)"
)
_URL_SCHEMES = ("postgresql://", "postgres://")


def parse_database_url(text: str) -> str | None:
    """RONIN_DATABASE_URL checked as libpq would read it, so a typo fails here in one line
    rather than as a driver traceback; empty means the embedded server."""
    if not text:
        return None
    try:
        options = conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(str(exc).split())
        raise InvalidValue(
            f"RONIN_DATABASE_URL must be {DATABASE_URL_FORM}: {reason}",
            field="RONIN_DATABASE_URL",
        ) from None
    if not options and not text.lower().startswith(_URL_SCHEMES):
        raise InvalidValue(
            f"RONIN_DATABASE_URL must be {DATABASE_URL_FORM}", field="RONIN_DATABASE_URL"
        )
    return text


def parse_tokens(text: str) -> tuple[ApiToken, ...]:
    """``read:abc...,write:def...`` as tokens; a clear error for a weak or malformed one."""
    tokens = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        scope, _, token = item.partition(":")
        if scope not in ("read", "write"):
            raise InvalidValue(
                "RONIN_API_TOKENS holds scope:token pairs, the scope read or write",
                field="RONIN_API_TOKENS",
            )
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
            raise InvalidValue(
                f"a token in RONIN_API_TOKENS has at least {MIN_TOKEN_CHARS} characters "
                "of A-Z a-z 0-9 ._~+/=-",
                field="RONIN_API_TOKENS",
            )
        tokens.append(ApiToken(token=token, scope=cast(Scope, scope)))
    return tuple(tokens)


def parse_peers(text: str) -> tuple[Peer, ...]:
    """``http://ronin-b:30437 TOKEN, http://ronin-c:30437``: base URLs, each with an optional
    bearer token after a space."""
    peers = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        url, _, token = item.partition(" ")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidValue(
                f"RONIN_PEERS holds base URLs (http://host:port), not {url!r}", field="RONIN_PEERS"
            )
        peers.append(Peer(url=url.rstrip("/"), token=token.strip() or None))
    return tuple(peers)


def _addresses(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses, normalised; a clear error for anything else."""
    found = []
    for part in filter(None, (item.strip() for item in env.get(name, "").split(","))):
        try:
            found.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise InvalidValue(f"{name} holds IP addresses, not {part!r}", field=name) from None
    return tuple(found)


def _existing_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise InvalidValue(f"{name} names {raw!r}, which is not a file", field=name)
    return path


def default_node_id() -> str:
    """A DID stable for this machine: ``did:kos:ronin:`` and a digest of the host name."""
    digest = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    return f"did:kos:ronin:{digest}"


def _node_id(value: str) -> str:
    if len(value) > 255 or not _DID.match(value):
        raise InvalidValue(f"RONIN_NODE_ID must be a DID, not {value!r}", field="RONIN_NODE_ID")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    """A number strictly between 0 and 1 from the environment, or the default."""
    value = _number(env, name, default)
    if not value < 1:
        raise InvalidValue(
            f"{name} must be a fraction between 0 and 1 (exclusive), not {env[name]!r}",
            field=name,
        )
    return value


def _sweep_method(env: Mapping[str, str], default: SweepMethod) -> SweepMethod:
    name = "RONIN_SWEEP_METHOD"
    value = env.get(name, "").strip().lower() or default
    if value not in SWEEP_METHODS:
        raise InvalidValue(
            f"{name} must be one of {', '.join(SWEEP_METHODS)}, not {env[name]!r}", field=name
        )
    return value


def _heartbeat(env: Mapping[str, str], default: float) -> float:
    """RONIN_CHANGES_HEARTBEAT_S: the protocol promises a heartbeat at least every 15 s."""
    name = "RONIN_CHANGES_HEARTBEAT_S"
    value = _number(env, name, default)
    if value > DEFAULT_CHANGES_HEARTBEAT_S:
        raise InvalidValue(f"{name} must be at most 15 (PROTOCOL.md section 9)", field=name)
    return value


def _seconds(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    return timedelta(seconds=_number(env, name, default))


def _number(
    env: Mapping[str, str], name: str, default: float | timedelta, *, minimum: float | None = None
) -> float:
    """A positive number (or one at least ``minimum``) from the environment, or the default;
    a clear error otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default.total_seconds() if isinstance(default, timedelta) else float(default)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a number, not {raw!r}", field=name) from None
    if minimum is not None:
        if not value >= minimum:  # also refuses NaN
            raise InvalidValue(f"{name} must be at least {minimum:g}, not {raw!r}", field=name)
    elif not value > 0:
        raise InvalidValue(f"{name} must be greater than 0, not {raw!r}", field=name)
    if value == float("inf"):
        raise InvalidValue(f"{name} must be finite, not {raw!r}", field=name)
    return value
