"""Why one probe failed: the one exception a probe step raises, caught once where the probe
becomes a ``Failed`` with its reason (a URL refused, a document that fails the host, an
answer that breaks a bound)."""

from __future__ import annotations


class ProbeFailure(Exception):
    """A probe that failed; ``reason`` is the short name counted in job results."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
