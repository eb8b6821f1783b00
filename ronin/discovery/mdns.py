"""mDNS / DNS-SD on the local link (PROTOCOL.md section 3), on python-zeroconf.

``browse`` lists the ``_kos._tcp.local.`` instances that answer within a window; each is only
a lead: the descriptor it points to is fetched and validated like any other (the descriptor is
authoritative). Whatever arrives on the link is untrusted, so a malformed advertisement is
skipped or trimmed, never raised, and everything is bounded: the time (the window plus one
resolve bound), the instances kept, and what is kept of each TXT record.

``advertise`` makes a node browsable for as long as its ``async with`` lasts. On the way out
it *awaits* the goodbye broadcast before closing: python-zeroconf sends none unless the task
``async_unregister_service`` returns has run, and without a goodbye a listener keeps a gone
node for the records' TTL (minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import ifaddr
from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ronin.discovery.descriptor import DESCRIPTOR_PATH, base_url, safe_path

SERVICE_TYPE: Final = "_kos._tcp.local."
TXT_VERSION: Final = "1"
#: Instances kept by one browse; later ones are ignored (a flooded link costs no more).
MAX_INSTANCES: Final = 1024
#: Addresses kept per instance.
MAX_ADDRESSES: Final = 16
#: A TXT record longer than this is not read at all (mDNS packets stop at about 9,000 bytes).
MAX_TXT_BYTES: Final = 8192
MAX_TXT_KEYS: Final = 64
MAX_TXT_KEY_CHARS: Final = 64
MAX_NAME_CHARS: Final = 255
MAX_PATH_CHARS: Final = 255
#: A browse window longer than this is a mistake (an hour of listening is not a probe).
MAX_WINDOW_S: Final = 600.0
#: How long resolving one instance may take, and how long browse waits past its window.
RESOLVE_TIMEOUT_S: Final = 3.0
#: Instances resolved at once.
RESOLVE_CONCURRENCY: Final = 32
#: Probing the name, then announcing it, takes about 1.5 s; more means something is wrong.
REGISTER_TIMEOUT_S: Final = 10.0
#: The goodbye is three packets 125 ms apart.
UNREGISTER_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 5.0
#: A DNS label, and a TXT string (key=value), are at most this many bytes.
MAX_LABEL_BYTES: Final = 63
MAX_TXT_ITEM_BYTES: Final = 255

logger = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Instance:
    """One ``_kos._tcp`` instance: a lead to a descriptor, not yet a service."""

    name: str
    addresses: tuple[str, ...]
    port: int
    txt: dict[str, str] = field(hash=False)

    @property
    def path(self) -> str:
        """The descriptor path: TXT ``path`` when it is a safe absolute path, else the default."""
        return safe_path(self.txt.get("path"))

    def descriptor_urls(self) -> list[str]:
        """``http://<address>:<port><path>`` for each address, IPv6 in brackets."""
        path = self.path
        return [f"{base_url(address, self.port)}{path}" for address in self.addresses]


async def browse(window_s: float, *, interfaces: Sequence[str] | None = None) -> list[Instance]:
    """Every ``_kos._tcp.local.`` instance that answers within ``window_s``, resolved.

    ``interfaces`` are the addresses of the interfaces to query on (None: all of them). Takes
    at most ``window_s`` plus ``RESOLVE_TIMEOUT_S`` (and the close). Raises ``ValueError`` for
    an interface that is not an IP address and ``OSError`` when no interface can be used;
    never for what the network sends.
    """
    if not 0 <= window_s <= MAX_WINDOW_S:
        raise ValueError(f"window_s must be between 0 and {MAX_WINDOW_S}: {window_s}")
    aiozc = AsyncZeroconf(interfaces=_interface_choice(interfaces))
    try:
        await _require_senders(aiozc)
        return await _browse(aiozc, window_s)
    finally:
        await _close(aiozc)


async def _browse(aiozc: AsyncZeroconf, window_s: float) -> list[Instance]:
    zc = aiozc.zeroconf
    semaphore = asyncio.Semaphore(RESOLVE_CONCURRENCY)
    tasks: dict[str, asyncio.Task[Instance | None]] = {}
    removed: set[str] = set()
    warned = False

    async def resolve(name: str) -> Instance | None:
        async with semaphore:
            return await _resolve(zc, name)

    def on_change(
        zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        nonlocal warned
        key = name.lower()
        if state_change is ServiceStateChange.Removed:
            removed.add(key)
            return
        removed.discard(key)
        if key in tasks:
            return
        if len(tasks) >= MAX_INSTANCES or len(name) > MAX_NAME_CHARS:
            if not warned and len(tasks) >= MAX_INSTANCES:
                logger.warning("more than %d mDNS instances; ignoring the rest", MAX_INSTANCES)
                warned = True
            return
        tasks[key] = asyncio.create_task(resolve(name))

    try:
        browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        try:
            await asyncio.sleep(window_s)
        finally:
            await browser.async_cancel()
        if tasks:
            await asyncio.wait(list(tasks.values()), timeout=RESOLVE_TIMEOUT_S)
    finally:
        # Late resolves, or all of them if we are cancelled: none may outlive the zeroconf.
        late = [task for task in tasks.values() if not task.done()]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    found: list[Instance] = []
    for key, task in tasks.items():
        if key in removed or task.cancelled() or task.exception() is not None:
            continue
        if (instance := task.result()) is not None:
            found.append(instance)
    return found


async def _resolve(zc: Zeroconf, name: str) -> Instance | None:
    """The instance behind ``name``, or None if it does not resolve or makes no sense."""
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc, RESOLVE_TIMEOUT_S * 1000):
            logger.debug("mDNS instance %r did not resolve", name)
            return None
        return _instance(info)
    except BadTypeInNameException:
        logger.debug("mDNS instance %r has a malformed name", name)
    except Exception:
        logger.debug("mDNS instance %r is malformed; skipped", name, exc_info=True)
    return None


def _instance(info: AsyncServiceInfo) -> Instance | None:
    port = info.port
    if not port or not 0 < port < 65536:
        logger.debug("mDNS instance %r has no usable port", info.name)
        return None
    addresses = list(dict.fromkeys(info.parsed_scoped_addresses()))[:MAX_ADDRESSES]
    if not addresses:
        return None
    return Instance(
        name=info.name, addresses=tuple(addresses), port=port, txt=decode_txt(info.text)
    )


def decode_txt(text: bytes) -> dict[str, str]:
    """A TXT record's keys and values; whatever cannot be text (or is too big) is left out.

    Keys are case-insensitive (RFC 6763 section 6.4), so they are lower-cased; the first of a
    repeated key counts; a key without ``=`` has the value ``""``. Values with control
    characters (NUL above all, which PostgreSQL refuses) are dropped, as are undecodable ones.
    """
    if len(text) > MAX_TXT_BYTES:
        logger.debug("TXT record of %d bytes ignored", len(text))
        return {}
    decoded: dict[str, str] = {}
    position = 0
    while position < len(text) and len(decoded) < MAX_TXT_KEYS:
        length = text[position]
        item = text[position + 1 : position + 1 + length]
        position += 1 + length
        if len(item) < length:
            break  # the record ends inside this string: it is cut, not a value
        raw_key, _, raw_value = item.partition(b"=")
        try:
            key = raw_key.decode("ascii").lower()
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not key or len(key) > MAX_TXT_KEY_CHARS or key in decoded:
            continue
        if _CONTROL.search(key) or _CONTROL.search(value):
            continue
        decoded[key] = value
    return decoded


def txt_record(node_id: str, node_class: str, path: str = DESCRIPTOR_PATH) -> dict[str, str]:
    """The TXT keys of PROTOCOL.md section 3 (``path`` only when it is not the default)."""
    txt = {"txtvers": TXT_VERSION, "node_id": node_id, "node_class": node_class}
    if path != DESCRIPTOR_PATH:
        txt["path"] = path
    return txt


@contextlib.asynccontextmanager
async def advertise(
    *,
    name: str,
    host_address: str | Sequence[str],
    port: int,
    node_id: str,
    node_class: str,
    path: str = DESCRIPTOR_PATH,
    interfaces: Sequence[str] | None = None,
) -> AsyncIterator[Instance]:
    """Advertise one ``_kos._tcp.local.`` instance for the duration of the ``async with``.

    ``name`` is the instance label (``<name>._kos._tcp.local.``); ``host_address`` one address
    or several (IPv4 and IPv6 of the same host: one instance). The context yields the instance
    as announced, once it is. On exit the goodbye is sent, and awaited, before the close.
    Raises ``ValueError`` for values that cannot be advertised, ``OSError`` when no interface
    can be used, and ``zeroconf.NonUniqueNameException`` if another responder holds the name.
    """
    info = _service_info(name, host_address, port, node_id, node_class, path)
    aiozc = AsyncZeroconf(interfaces=_interface_choice(interfaces))
    try:
        await _require_senders(aiozc)
        async with asyncio.timeout(REGISTER_TIMEOUT_S):
            announced = await aiozc.async_register_service(info)
            await announced
        logger.info("advertising %s on port %d", info.name, port)
        try:
            yield Instance(
                name=info.name,
                addresses=tuple(info.parsed_scoped_addresses()),
                port=port,
                txt=decode_txt(info.text),
            )
        finally:
            try:
                async with asyncio.timeout(UNREGISTER_TIMEOUT_S):
                    goodbye = await aiozc.async_unregister_service(info)
                    await goodbye
                logger.info("withdrew %s", info.name)
            except TimeoutError:
                logger.warning("the goodbye for %s was not sent in time", info.name)
    finally:
        await _close(aiozc)


def _service_info(
    name: str,
    host_address: str | Sequence[str],
    port: int,
    node_id: str,
    node_class: str,
    path: str,
) -> AsyncServiceInfo:
    """The ServiceInfo to register, every value checked first (ValueError says which)."""
    if not name or len(name.encode()) > MAX_LABEL_BYTES or _CONTROL.search(name):
        raise ValueError(f"name must be 1-{MAX_LABEL_BYTES} bytes without controls: {name!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    if safe_path(path) != path:
        raise ValueError(f"path must be a safe absolute path: {path!r}")
    raw = [host_address] if isinstance(host_address, str) else list(host_address)
    if not raw:
        raise ValueError("host_address names no address")
    addresses = [str(ipaddress.ip_address(address)) for address in raw]
    txt = txt_record(node_id, node_class, path)
    for key, value in txt.items():
        if _CONTROL.search(value) or len(f"{key}={value}".encode()) > MAX_TXT_ITEM_BYTES:
            raise ValueError(f"TXT {key} must fit in {MAX_TXT_ITEM_BYTES} bytes without controls")
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        port=port,
        properties=dict(txt),
        server=_host_name(name),
        parsed_addresses=addresses,
    )


def _host_name(name: str) -> str:
    """A host name of our own for the SRV target, stable for an instance name.

    The digest keeps two instances whose names look alike after cleaning from claiming one
    host name with different addresses.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "kos"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{label}-{digest}.local."


def _interface_choice(interfaces: Sequence[str] | None) -> InterfaceChoice | list[str | int]:
    """zeroconf's ``interfaces=``: all, or those of these addresses this host has.

    An address no interface here has is left out before zeroconf sees it: zeroconf raises
    for it halfway through opening its sockets and leaks the ones already open. ValueError
    for what is not an address, OSError when none is left.
    """
    if interfaces is None:
        return InterfaceChoice.All
    if isinstance(interfaces, str):
        raise ValueError("interfaces is a sequence of addresses, not one string")
    wanted = [ipaddress.ip_address(address.split("%", 1)[0]) for address in interfaces]
    local = {
        ipaddress.ip_address(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
    }
    usable: list[str | int] = []
    for address in wanted:
        if address in local:
            usable.append(str(address))
        else:
            logger.warning("mDNS: no interface here has the address %s; not using it", address)
    if not usable:
        raise OSError("mDNS: none of the interfaces asked for has a usable address")
    return usable


async def _require_senders(aiozc: AsyncZeroconf) -> None:
    """Fail now, not silently, when none of the interfaces asked for could be bound."""
    await aiozc.zeroconf.async_wait_for_start(timeout=CLOSE_TIMEOUT_S)
    if not aiozc.zeroconf.engine.senders:
        raise OSError("mDNS: none of the interfaces asked for has a usable address")


async def _close(aiozc: AsyncZeroconf) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await aiozc.async_close()
    except TimeoutError:
        logger.warning("zeroconf did not close within %ss", CLOSE_TIMEOUT_S)
