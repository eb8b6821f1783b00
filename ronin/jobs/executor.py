"""The executor a worker runs each job with, and how its failures are classified."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from ronin.errors import InvalidValue, RoninError
from ronin.jobs.context import JobContext, Outcome

#: An executor does one attempt of a job; it returns a crawl's report, or extra result
#: fields of its own (or None).
Executor = Callable[[JobContext], Awaitable[Outcome]]


def is_permanent(error: BaseException) -> bool:
    """True for a failure that retrying cannot fix (the error's class says so)."""
    return isinstance(error, RoninError) and error.permanent


def load_executor(reference: str) -> Executor:
    """An executor named ``module:attribute`` (for tests and plug-ins)."""
    module_name, _, attribute = reference.partition(":")
    try:
        executor: Executor = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidValue(f"no executor {reference!r}: {exc}", field="executor") from None
    return executor
