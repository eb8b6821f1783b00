"""Re-verification's pure part: what a fetch says about a node check, and the partition guard."""

from __future__ import annotations

import json

from ronin.discovery.descriptor import parse_descriptor
from ronin.discovery.http_probe import Failed, Fetched
from ronin.discovery.verify import GuardWindow, outcome, share_trips
from ronin.store.liveness import Answered, CheckFailed, NodeCheck

NODE = "did:kos:griot:7f3a9c"
URL = "http://10.0.0.5:30437/.well-known/kos-node"


def check(node_id: str = NODE, *, confirming: bool = False) -> NodeCheck:
    return NodeCheck(node_id, URL, ("did:kos:service:a", "did:kos:service:b"), 3, confirming)


def fetched(node_id: str = NODE, *services: str, url: str = URL) -> Fetched:
    document = {
        "kos": "1.0",
        "node_id": node_id,
        "node_class": "Griot",
        "services": [
            {"service_id": sid, "endpoint": "http://10.0.0.5:30437/x", "capabilities": []}
            for sid in services
        ],
    }
    return Fetched(url, parse_descriptor(json.dumps(document).encode()), 3.0)


def test_an_answer_lists_the_services_the_descriptor_holds() -> None:
    result = outcome(check(), fetched(NODE, "did:kos:service:a", "did:kos:service:c"))
    assert result == Answered(check(), URL, frozenset({"did:kos:service:a", "did:kos:service:c"}))


def test_an_answer_keeps_the_url_that_answered_after_redirects() -> None:
    moved = "http://10.0.0.9:30437/.well-known/kos-node"
    result = outcome(check(), fetched(NODE, url=moved))
    assert isinstance(result, Answered)
    assert result.url == moved
    assert result.service_ids == frozenset()


def test_a_failed_fetch_is_a_failed_check_with_its_reason() -> None:
    assert outcome(check(), Failed(URL, "refused", "connection refused")) == CheckFailed(
        check(), "refused"
    )


def test_a_descriptor_of_another_node_is_a_failure_not_an_answer() -> None:
    result = outcome(check(), fetched("did:kos:griot:other", "did:kos:service:a"))
    assert result == CheckFailed(check(), "node_mismatch")


def test_the_share_trips_only_past_the_fraction_on_a_large_enough_sample() -> None:
    assert share_trips(4, 10, fraction=0.3, min_sample=10)
    assert not share_trips(3, 10, fraction=0.3, min_sample=10)  # exactly 30 %: not more
    assert not share_trips(9, 9, fraction=0.3, min_sample=10)  # too few to tell
    assert not share_trips(0, 0, fraction=0.3, min_sample=0)


def failures(nodes: range, *, confirming: bool = False) -> list[CheckFailed]:
    return [CheckFailed(check(f"did:kos:n:{n}", confirming=confirming), "timeout") for n in nodes]


def answers(nodes: range) -> list[Answered]:
    return [Answered(check(f"did:kos:n:{n}"), URL, frozenset()) for n in nodes]


def test_the_window_counts_each_node_once_by_its_latest_check() -> None:
    window = GuardWindow(window_s=12.0)
    window.add(0.0, failures(range(10)))
    assert window.trips(0.0)
    window.add(1.0, answers(range(10)))  # the same nodes answer again
    assert window.sample(1.0) == (0, 10)
    assert not window.trips(1.0)


def test_the_window_forgets_checks_older_than_its_length() -> None:
    window = GuardWindow(window_s=12.0)
    window.add(0.0, answers(range(20)))
    window.add(6.0, failures(range(20, 30)))
    assert window.sample(6.0) == (10, 30)
    assert window.trips(6.0)  # 10 of 30 is over 30 %
    assert window.sample(12.0) == (10, 10)  # the answers at 0.0 are out of the window
    assert window.sample(18.0) == (0, 0)
    assert not window.trips(18.0)


def test_retries_confirming_a_death_do_not_weigh_in_the_share() -> None:
    window = GuardWindow(window_s=12.0)
    window.add(0.0, answers(range(9)) + failures(range(9, 10)))
    for at in (2.0, 4.0, 6.0):
        window.add(at, failures(range(9, 10), confirming=True))
    assert window.sample(6.0) == (1, 10)
    assert not window.trips(6.0)


def test_once_on_the_guard_stays_on_while_the_share_stays_high_however_thin_the_sample() -> None:
    window = GuardWindow(window_s=12.0)
    window.add(0.0, failures(range(3)))
    assert not window.holds(0.0, held=False)  # 3 checks: too few to trip
    assert window.holds(0.0, held=True)  # but enough to stay on
    assert window.holds(30.0, held=True)  # an empty window changes nothing
    assert not window.holds(30.0, held=False)


def test_the_guard_lets_go_once_the_share_falls_to_the_fraction() -> None:
    window = GuardWindow(window_s=12.0)
    window.add(0.0, answers(range(2)) + failures(range(2, 3)))
    assert window.holds(0.0, held=True)  # 1 of 3 is still over 30 %
    window.add(1.0, answers(range(3, 7)))
    assert not window.holds(1.0, held=True)  # 1 of 7 is not
