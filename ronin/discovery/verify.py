"""Re-verification, the pure part: what one descriptor fetch says about a node check, and the
partition guard (PROTOCOL.md section 8) deciding whether failures may count as deaths.

No I/O: ``ronin.jobs.verifier`` fetches, asks these, and records.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ronin.discovery.http_probe import Failed, Fetched
from ronin.store.liveness import Answered, CheckFailed, CheckResult, NodeCheck

DEFAULT_GUARD_FRACTION = 0.3
#: Below this many nodes checked in the guard's window the failure share says nothing (three
#: failures of five checks are as likely three deaths as a partition): only the self-checks
#: can make the guard hold. 10 keeps one false trip from a handful of deaths unlikely, and
#: is reached by any map of 10 nodes or more, whose checks a discovery aligns in one batch.
DEFAULT_GUARD_MIN_SAMPLE = 10


def outcome(check: NodeCheck, fetched: Fetched | Failed) -> CheckResult:
    """The result of a check: the node answered (listing these services), or it failed.

    A descriptor naming another node is a failure (``node_mismatch``): the address no longer
    serves the node checked, which says nothing of whether that node lives elsewhere.
    """
    if isinstance(fetched, Failed):
        return CheckFailed(check, fetched.reason)
    node = fetched.descriptor
    if node.node_id != check.node_id:
        return CheckFailed(check, "node_mismatch")
    return Answered(check, fetched.url, frozenset(service.service_id for service in node.services))


def failed(result: CheckResult) -> bool:
    """True for a check that could not reach the node's descriptor."""
    return isinstance(result, CheckFailed)


def share_trips(failures: int, checked: int, *, fraction: float, min_sample: int) -> bool:
    """True when the failure share of ``checked`` nodes is over ``fraction``, on a sample of at
    least ``min_sample``."""
    return checked >= min_sample and checked > 0 and failures / checked > fraction


@dataclass(slots=True)
class GuardWindow:
    """The latest routine check of each node within the last ``window_s`` seconds: the
    sample of the failure share.

    Retries that confirm a death (``NodeCheck.confirming``) are left out, so a few dead nodes
    checked three times each do not weigh as many; checks of unverified nodes count, so a
    partition that lasts keeps the guard holding. The window should be no longer than the
    confirmation period: then, when a suspect service would become gone, every check in the
    sample was made after its node first failed, and a partition shows as one.
    """

    window_s: float
    fraction: float = DEFAULT_GUARD_FRACTION
    min_sample: int = DEFAULT_GUARD_MIN_SAMPLE
    #: node_id -> (when, failed), oldest first (times only grow), so expiry pops the front.
    _latest: OrderedDict[str, tuple[float, bool]] = field(default_factory=OrderedDict)
    _failures: int = 0

    def add(self, at: float, results: Iterable[CheckResult]) -> None:
        """Take a batch of results made at ``at`` (seconds on any one clock)."""
        for result in results:
            if result.check.confirming:
                continue
            node_id, bad = result.check.node_id, failed(result)
            previous = self._latest.pop(node_id, None)
            self._failures += bad - (previous[1] if previous else False)
            self._latest[node_id] = (at, bad)
        self._expire(at)

    def sample(self, at: float) -> tuple[int, int]:
        """(failures, nodes checked) in the window ending at ``at``."""
        self._expire(at)
        return self._failures, len(self._latest)

    def trips(self, at: float) -> bool:
        """True when the sample's failure share says Ronin, not the network, is failing."""
        failures, checked = self.sample(at)
        return share_trips(failures, checked, fraction=self.fraction, min_sample=self.min_sample)

    def holds(self, at: float, *, held: bool) -> bool:
        """Whether the share keeps (or puts) the guard on, given whether it ``held`` before.

        Tripping needs ``min_sample`` checks; staying on needs only a share still over the
        fraction, and an empty window changes nothing. Under the guard failing nodes are
        checked once an interval, so the window holds few of them in a small map: without this
        the guard would let go mid-partition for want of a sample, and the deaths it had held
        back would be confirmed.
        """
        failures, checked = self.sample(at)
        if checked == 0:
            return held
        if failures / checked > self.fraction:
            return held or checked >= self.min_sample
        return False

    def _expire(self, at: float) -> None:
        cutoff = at - self.window_s
        while self._latest and next(iter(self._latest.values()))[0] <= cutoff:
            _, (_, bad) = self._latest.popitem(last=False)
            self._failures -= bad
