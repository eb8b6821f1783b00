"""The liveness state machine (PROTOCOL.md section 8), rule by rule."""

from __future__ import annotations

import pytest

from ronin.store.liveness_rules import EVENTS, STATES, State, next_state, transition_table


@pytest.mark.parametrize("state", STATES)
def test_a_listing_answer_makes_any_service_alive(state: State) -> None:
    for guarded in (False, True):
        for confirmed in (False, True):
            assert next_state(state, "listed", guarded=guarded, confirmed=confirmed) == "alive"


@pytest.mark.parametrize("state", STATES)
def test_an_answer_without_the_service_makes_it_gone_at_once(state: State) -> None:
    for guarded in (False, True):
        assert next_state(state, "absent", guarded=guarded, confirmed=False) == "gone"


def test_a_failure_makes_alive_suspect() -> None:
    assert next_state("alive", "failed", guarded=False, confirmed=False) == "suspect"


def test_a_suspect_is_gone_only_once_the_confirmation_period_has_passed() -> None:
    assert next_state("suspect", "failed", guarded=False, confirmed=False) == "suspect"
    assert next_state("suspect", "failed", guarded=False, confirmed=True) == "gone"


@pytest.mark.parametrize("state", ["alive", "suspect", "unverified"])
def test_under_the_guard_failures_make_unverified_never_gone(state: State) -> None:
    for confirmed in (False, True):
        assert next_state(state, "failed", guarded=True, confirmed=confirmed) == "unverified"


def test_unverified_failing_without_the_guard_starts_its_confirmation() -> None:
    for confirmed in (False, True):
        assert next_state("unverified", "failed", guarded=False, confirmed=confirmed) == "suspect"


def test_a_failure_leaves_gone_gone() -> None:
    for guarded in (False, True):
        assert next_state("gone", "failed", guarded=guarded, confirmed=True) == "gone"


def test_the_table_holds_one_rule_for_every_case() -> None:
    table = transition_table()
    keys = [(state, event, guarded, confirmed) for state, event, guarded, confirmed, _ in table]
    assert len(keys) == len(set(keys)) == len(STATES) * len(EVENTS) * 4
    assert {rule[4] for rule in table} <= set(STATES)
