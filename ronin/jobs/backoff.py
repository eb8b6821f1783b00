"""Retry delays: exponential, capped, with full jitter so retries of many jobs spread out."""

from __future__ import annotations

import random
from datetime import timedelta

BASE_DELAY = timedelta(seconds=2)
MAX_DELAY = timedelta(minutes=5)


def retry_delay(
    attempt: int,
    *,
    base: timedelta = BASE_DELAY,
    cap: timedelta = MAX_DELAY,
    rng: random.Random | None = None,
) -> timedelta:
    """The wait before attempt ``attempt + 1``: half fixed, half random, of base * 2^(n-1)."""
    ceiling = min(cap, base * (1 << max(attempt - 1, 0)))
    fraction = rng.random() if rng is not None else random.random()
    return ceiling / 2 + ceiling / 2 * fraction
