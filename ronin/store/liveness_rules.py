"""The liveness state machine (PROTOCOL.md section 8), in one place and pure.

``record_checks`` (ronin/store/sql/liveness.sql) applies it in SQL by joining every checked
service with ``transition_table()``: the rules are written here once, tested here, and the
database only looks them up.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

State = Literal["alive", "suspect", "gone", "unverified"]
#: What one check of a service's node said about it: its descriptor listed it, answered
#: without it, or could not be fetched.
Event = Literal["listed", "absent", "failed"]

STATES: Final[tuple[State, ...]] = get_args(State)
EVENTS: Final[tuple[Event, ...]] = get_args(Event)
#: What map queries return unless asked for a state.
VISIBLE_STATES: Final[tuple[State, ...]] = ("alive", "suspect", "unverified")


def next_state(state: State, event: Event, *, guarded: bool, confirmed: bool) -> State:
    """The state after one check of the service's node.

    ``guarded``: the partition guard held for this check (Ronin suspects itself).
    ``confirmed``: the service has been ``suspect`` for the whole confirmation period.
    """
    if event == "listed":
        return "alive"
    if event == "absent":
        return "gone"
    if state == "gone":
        return "gone"
    if guarded:
        return "unverified"
    if state == "suspect":
        return "gone" if confirmed else "suspect"
    # alive, or unverified once the guard no longer holds: the confirmation period starts now.
    return "suspect"


def transition_table() -> list[tuple[State, Event, bool, bool, State]]:
    """Every (state, event, guarded, confirmed) with the state it leads to."""
    return [
        (
            state,
            event,
            guarded,
            confirmed,
            next_state(state, event, guarded=guarded, confirmed=confirmed),
        )
        for state in STATES
        for event in EVENTS
        for guarded in (False, True)
        for confirmed in (False, True)
    ]
