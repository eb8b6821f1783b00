"""Fixtures every integration test module shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.jobs import JobStore
from tests.support import netns
from tests.support.netns import VethNamespace


@pytest.fixture
def store(pool: AsyncConnectionPool[Any]) -> JobStore:
    """The job queue on this test's database."""
    return JobStore(pool)


@pytest.fixture
def link() -> Iterator[VethNamespace]:
    """A network namespace joined to this one by a veth pair (skipped where that needs root)."""
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with netns.veth_namespace() as created:
        yield created
