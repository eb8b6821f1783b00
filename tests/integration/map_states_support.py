"""A small map with services in every liveness state, for the map and API tests of states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ronin.store.models import Sighting
from ronin.store.services import ServiceMap

NOW = datetime.now(UTC)
CHECKED = NOW - timedelta(minutes=3)
SINCE = NOW - timedelta(minutes=10)

# service number: (node, class, capabilities, state)
MAP: dict[int, tuple[int, str, tuple[str, ...], str]] = {
    1: (1, "Griot", ("klf", "story.tell"), "alive"),
    2: (1, "Griot", ("story.tell",), "gone"),
    3: (2, "Musa", ("klf", "music.play"), "suspect"),
    4: (2, "Musa", ("music.play",), "unverified"),
    5: (3, "Musa", ("klf", "music.play"), "gone"),
    6: (3, "Musa", ("music.play",), "gone"),
    7: (4, "Griot", ("klf",), "alive"),
    8: (4, "Griot", ("story.tell",), "suspect"),
}


def sid(number: int) -> str:
    return f"did:kos:service:{number:03d}"


def numbers(items: list[Any]) -> list[int]:
    return [int(item.service_id[-3:]) for item in items]


def set_states(db_url: str, states: dict[int, str]) -> None:
    """Put services in states as a check would: an UPDATE of their liveness rows."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for number, state in states.items():
            conn.execute(
                "UPDATE service_liveness SET state = %s, state_since = %s, last_checked = %s "
                "WHERE service_id = %s",
                (state, SINCE, CHECKED, sid(number)),
            )


async def fill_states_map(service_map: ServiceMap, db_url: str) -> ServiceMap:
    """Write ``MAP`` and put each service in its state."""
    await service_map.upsert(
        Sighting(
            service_id=sid(number),
            node_id=f"did:kos:node:{node:02d}",
            node_class=node_class,
            endpoint=f"http://127.0.0.{node}:30437/klf",
            capabilities=capabilities,
            seen_at=NOW,
        )
        for number, (node, node_class, capabilities, _) in MAP.items()
    )
    set_states(db_url, {n: state for n, (_, _, _, state) in MAP.items() if state != "alive"})
    return service_map
