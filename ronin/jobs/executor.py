"""The executor a worker runs each job with, and how its failures are classified."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from ronin.errors import InvalidValue, RoninError
from ronin.jobs.context import JobContext

#: An executor does one attempt of a job; it may return extra result fields.
Executor = Callable[[JobContext], Awaitable[dict[str, Any] | None]]


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
