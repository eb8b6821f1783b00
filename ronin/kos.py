"""Constants of the kOS protocol that every layer may read (PROTOCOL.md section 1).

They sit beside ``config`` and ``errors``, below ``store``: the map spells node classes as
the protocol does without importing discovery.
"""

from __future__ import annotations

CANONICAL_CLASSES = (
    "Griot", "Tohunga", "Ronin", "Musa", "Hakim", "Skald", "Oracle",
    "Junzi", "Yachay", "Sachem", "Archon", "Amauta", "Mzee",
)  # fmt: skip
