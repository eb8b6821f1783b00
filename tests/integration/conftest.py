"""Fixtures every integration test module shares."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.jobs import JobStore


@pytest.fixture
def store(pool: AsyncConnectionPool[Any]) -> JobStore:
    """The job queue on this test's database."""
    return JobStore(pool)
