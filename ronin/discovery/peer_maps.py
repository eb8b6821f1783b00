"""did:kos resolution through other Ronin nodes (PROTOCOL.md section 4; RONIN_PEERS).

A did:kos DID has no global resolver: a Ronin asks its own map, then the maps of the peers
its operator configured (``GET /v1/services?node_id=<did>`` on each, with its token). What a
peer says is a lead, not a fact: every endpoint is re-probed, and a descriptor that names
another node is a mismatch.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from ronin.config import Peer
from ronin.discovery.http_probe import is_http_url

logger = logging.getLogger(__name__)

PEER_TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 1024 * 1024
MAX_ENDPOINTS_PER_PEER = 100


class PeerMaps:
    """The configured peers' maps, asked concurrently; ``async with`` owns the session."""

    def __init__(
        self,
        peers: tuple[Peer, ...],
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = PEER_TIMEOUT_S,
    ) -> None:
        self.peers = peers
        self._ssl_context = ssl_context
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        if self.peers:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(
                    limit=len(self.peers) * 2,
                    ssl=self._ssl_context if self._ssl_context is not None else True,
                ),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def endpoints(self, did: str) -> tuple[list[str], list[str]]:
        """Every http(s) endpoint the peers' maps hold for the node ``did``, and why peers
        could not answer, as short reasons (``peer_unreachable``...)."""
        if self._session is None:
            return [], []
        answers = await asyncio.gather(*(self._ask(peer, did) for peer in self.peers))
        found = {endpoint for answer in answers if isinstance(answer, list) for endpoint in answer}
        return sorted(found), [answer for answer in answers if isinstance(answer, str)]

    async def _ask(self, peer: Peer, did: str) -> list[str] | str:
        """The endpoints ``peer`` knows for ``did``, or why it could not say."""
        assert self._session is not None
        headers = {"Authorization": f"Bearer {peer.token}"} if peer.token else {}
        params = {"node_id": did, "limit": str(MAX_ENDPOINTS_PER_PEER)}
        try:
            async with self._session.get(
                f"{peer.url}/v1/services", params=params, headers=headers
            ) as answer:
                if answer.status != 200:
                    return self._failed(peer, f"peer_status_{answer.status}")
                body = await answer.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.info("peer %s did not answer: %s", peer.url, exc)
            return self._failed(peer, "peer_unreachable")
        if len(body) > MAX_ANSWER_BYTES:
            return self._failed(peer, "peer_answer_too_large")
        try:
            items = orjson.loads(body).get("items", [])
        except (orjson.JSONDecodeError, AttributeError):
            return self._failed(peer, "peer_bad_answer")
        return [url for url in (_endpoint(item, did) for item in items) if url]

    def _failed(self, peer: Peer, reason: str) -> str:
        logger.info("peer %s: %s", peer.url, reason)
        return reason


def _endpoint(item: Any, did: str) -> str | None:
    """The service's endpoint, if the item is a service of ``did`` with an http(s) one."""
    if not isinstance(item, dict) or item.get("node_id") != did:
        return None
    endpoint = item.get("endpoint")
    return endpoint if is_http_url(endpoint) else None
