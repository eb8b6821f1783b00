"""Two nodes claiming one service_id: the map's owner keeps it; within a job the claim of the
earliest probe owns it, in one batch or across batches; every other claim is a conflict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ronin.store.models import Sighting, UpsertResult
from ronin.store.services import ServiceMap

SID = "did:kos:service:b0b0b0:heal"
EARLY, LATE = "did:kos:griot:b0b0b0", "did:kos:musa:f0f0f0"
JOB, OTHER_JOB = "3f1e0000-0000-4000-8000-000000000001", "3f1e0000-0000-4000-8000-000000000002"


def claim(
    node_id: str,
    rank: tuple[int, ...] | None,
    *,
    job_id: str | None = JOB,
    service_id: str = SID,
    seen_at: datetime | None = None,
) -> Sighting:
    return Sighting(
        service_id=service_id,
        node_id=node_id,
        node_class="Griot",
        endpoint=f"http://127.0.0.1:30437/{node_id.rsplit(':', 1)[-1]}",
        capabilities=("healing",),
        seen_at=seen_at or datetime.now(UTC),
        metadata={"discovery_method": "http_probe"},
        job_id=job_id,
        rank=rank,
    )


def conflicts(result: UpsertResult) -> list[tuple[str, str, str]]:
    return [(c.service_id, c.claimed_by, c.owner) for c in result.conflicts]


async def owner(service_map: ServiceMap, service_id: str = SID) -> str:
    stored = await service_map.get(service_id)
    assert stored is not None
    return stored.node_id


@pytest.mark.parametrize("early_first", [True, False])
async def test_in_one_batch_the_earliest_rank_owns_and_the_other_is_a_conflict(
    service_map: ServiceMap, early_first: bool
) -> None:
    early, late = claim(EARLY, (1, 1, 3)), claim(LATE, (1, 1, 200))
    result = await service_map.upsert([early, late] if early_first else [late, early])
    assert result.inserted == [SID]
    assert conflicts(result) == [(SID, LATE, EARLY)]
    assert await owner(service_map) == EARLY


async def test_in_one_batch_without_ranks_the_first_given_owns(service_map: ServiceMap) -> None:
    now = datetime.now(UTC)
    first = claim(LATE, None, job_id=None, seen_at=now)
    second = claim(EARLY, None, job_id=None, seen_at=now + timedelta(seconds=1))
    result = await service_map.upsert([first, second])
    assert result.inserted == [SID]
    assert conflicts(result) == [(SID, EARLY, LATE)]
    assert await owner(service_map) == LATE


async def test_a_later_batch_of_the_job_with_an_earlier_rank_takes_the_row_over(
    service_map: ServiceMap,
) -> None:
    first = await service_map.upsert([claim(LATE, (1, 1, 200))])
    assert first.inserted == [SID]
    second = await service_map.upsert([claim(EARLY, (1, 1, 3))])
    assert second.taken_over == [SID]
    assert second.inserted == second.refreshed == []
    assert conflicts(second) == [(SID, LATE, EARLY)]
    stored = await service_map.get(SID)
    assert stored is not None
    assert (stored.node_id, stored.endpoint) == (EARLY, "http://127.0.0.1:30437/b0b0b0")
    assert stored.discovery_metadata["claim"] == {"job_id": JOB, "rank": [1, 1, 3]}
    # The displaced node seen again in the job (another address) is a conflict again.
    third = await service_map.upsert([claim(LATE, (2, 0, 0))])
    assert conflicts(third) == [(SID, LATE, EARLY)]
    assert await owner(service_map) == EARLY


async def test_a_later_rank_of_the_job_does_not_take_the_row(service_map: ServiceMap) -> None:
    await service_map.upsert([claim(EARLY, (1, 1, 3))])
    result = await service_map.upsert([claim(LATE, (1, 1, 200))])
    assert result.inserted == result.refreshed == result.taken_over == []
    assert conflicts(result) == [(SID, LATE, EARLY)]
    assert await owner(service_map) == EARLY


async def test_a_row_held_before_the_job_stays_with_its_owner_whatever_the_ranks(
    service_map: ServiceMap,
) -> None:
    await service_map.upsert([claim(LATE, (1, 1, 200), job_id=OTHER_JOB)])
    # The job sees the owner after an earlier-ranked claimant, in the same batch: the owner
    # is refreshed (not dropped) and the claimant is the conflict.
    result = await service_map.upsert([claim(EARLY, (1, 1, 3)), claim(LATE, (1, 1, 9))])
    assert result.refreshed == [SID]
    assert conflicts(result) == [(SID, EARLY, LATE)]
    # A refresh keeps the claim of the job that wrote the row: this job cannot take it over.
    again = await service_map.upsert([claim(EARLY, (1, 1, 0))])
    assert conflicts(again) == [(SID, EARLY, LATE)]
    stored = await service_map.get(SID)
    assert stored is not None
    assert stored.node_id == LATE
    assert stored.discovery_metadata["claim"]["job_id"] == OTHER_JOB


async def test_a_stale_row_taken_over_by_the_job_is_then_ordered_by_its_ranks(
    service_map: ServiceMap,
) -> None:
    stale = datetime.now(UTC) - service_map.freshness_window - timedelta(minutes=1)
    await service_map.upsert([claim("did:kos:griot:gone", None, job_id=None, seen_at=stale)])
    first = await service_map.upsert([claim(LATE, (1, 1, 200))])
    assert first.refreshed == [SID]
    assert first.conflicts == []
    second = await service_map.upsert([claim(EARLY, (1, 1, 3))])
    assert second.taken_over == [SID]
    assert conflicts(second) == [(SID, LATE, EARLY)]


async def test_two_jobs_at_once_one_owns_and_the_other_reports_the_conflict(
    service_map: ServiceMap,
) -> None:
    ids = [f"did:kos:service:shared:{i:03d}" for i in range(300)]
    one = [claim(EARLY, (1, 1, 5), job_id=JOB, service_id=sid) for sid in ids]
    two = [claim(LATE, (1, 1, 0), job_id=OTHER_JOB, service_id=sid) for sid in ids]
    results = await asyncio.gather(
        service_map.upsert(one, batch_size=25), service_map.upsert(two, batch_size=25)
    )
    for sid in ids:
        held_by = await owner(service_map, sid)
        writers = [r for r in results if sid in r.inserted]
        losers = [r for r in results if any(c.service_id == sid for c in r.conflicts)]
        # One job inserted it, for the node that holds it; the other job's claim is its
        # conflict against that node. Nothing is dropped and nothing is taken over.
        assert len(writers) == len(losers) == 1
        assert writers[0] is not losers[0]
        [conflict] = [c for c in losers[0].conflicts if c.service_id == sid]
        assert (conflict.owner, conflict.claimed_by) == (
            held_by,
            {EARLY, LATE}.difference({held_by}).pop(),
        )
    assert all(r.taken_over == r.refreshed == [] for r in results)
