"""Ronin's exception tree.

Each class carries the protocol error code (PROTOCOL.md section 5 where one applies) and the
HTTP status an API answer would use, so every layer reports a failure the same way::

    RoninError
    +-- InvalidValue            a value Ronin refuses before it reaches SQL or the network
    |   +-- UnstorableValue     a string or number PostgreSQL cannot store (NUL, surrogate, NaN)
    |   +-- InvalidCursor       a pagination cursor Ronin did not issue
    |   +-- InvalidTarget       job parameters that break PROTOCOL.md section 5
    |   +-- InvalidJson         a request body that is not JSON
    |   +-- EmptyBatch          a batch submission without a job
    +-- PayloadTooLarge         a request body over the API's cap
    |   +-- TooManyJobs         a batch submission of more jobs than one request may carry
    +-- QueueFull               more jobs pending than the node accepts; retry later
    +-- BatchRefused            a batch submission of which no job was accepted
    +-- Unauthenticated         no API token, or one the node does not know
    +-- InsufficientScope       a read-only token on a route that writes
    +-- UnsupportedMessage      a KLF message or task this node does not handle
    +-- ForbiddenTarget         a target outside the scope policy
    +-- NotFound                no such job, service or schedule
    +-- JobFinished             the job already ended
    +-- AlreadyExists           a schedule name already taken
    +-- ScanFailed              the discovery cannot succeed (permanent)
    +-- JobTimedOut             the job ran longer than its timeout (permanent)
    +-- JobCancelled            an operator cancelled the job
    +-- TransientFailure        an unexpected failure of one attempt; the job retries
    +-- Interrupted             the command was interrupted before its job ended
    +-- BindFailed              the API could not listen on the address asked for
    +-- RemoteError             an error answer from a remote node, with the code it gave
    +-- RemoteUnreachable       the remote node at RONIN_URL could not be reached
    +-- DatabaseError           the database could not be reached or answered with an error
        +-- DatabaseUnreachable no connection could be opened to the server
        +-- SchemaOutOfDate     the schema is older than this Ronin; names the command that fixes it
        +-- EmbeddedServerError the embedded PostgreSQL could not be started

A class says whether a job failing with it is ``permanent`` (no retry can fix it) and gives
the ``{"code", "message"}`` payload a job's error is stored as (``to_payload``).
"""

from __future__ import annotations

from typing import ClassVar


class RoninError(Exception):
    """Base of every error Ronin raises on purpose."""

    code = "RONIN_ERROR"
    http_status = 500
    #: A job failing with this error fails at once: retrying cannot fix it.
    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str]:
        """The error in the one JSON shape Ronin answers with."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def to_payload(self) -> dict[str, str]:
        """The error as a job stores it: ``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}


class InvalidValue(RoninError):
    """A value that breaks a rule of the protocol or of the schema."""

    code = "INVALID_VALUE"
    http_status = 422


class UnstorableValue(InvalidValue):
    """A value PostgreSQL would refuse, caught before it can fail a whole batch."""

    code = "UNSTORABLE_VALUE"


class InvalidCursor(InvalidValue):
    """A pagination cursor that was not issued by Ronin."""

    code = "INVALID_CURSOR"
    http_status = 400


class CursorExpired(RoninError):
    """A change-feed cursor older than the log keeps (or from another database): the client
    re-reads the map and resumes from ``cursor``, the current one."""

    code = "CURSOR_EXPIRED"
    http_status = 410

    def __init__(self, message: str, *, cursor: str, field: str | None = "since") -> None:
        super().__init__(message, field=field)
        self.cursor = cursor

    def as_dict(self) -> dict[str, str]:
        return {**super().as_dict(), "cursor": self.cursor}


class StreamTooSlow(RoninError):
    """A change stream's client fell further behind than the hub's window holds: the stream
    ends, and the client resumes from its last cursor."""

    code = "STREAM_TOO_SLOW"
    http_status = 503


class DatabaseError(RoninError):
    """The database could not be reached, or refused a statement."""

    code = "DATABASE_ERROR"
    http_status = 503


class DatabaseUnreachable(DatabaseError):
    """No connection could be opened: the server is down, unknown, or refused the login."""

    code = "DATABASE_UNREACHABLE"

    def __init__(self, address: str, reason: str, *, setting: str | None = None) -> None:
        named = f" ({setting})" if setting else ""
        super().__init__(f"Could not connect to PostgreSQL at {address}{named}: {reason}")
        self.address = address
        self.reason = reason

    def naming(self, setting: str) -> DatabaseUnreachable:
        """The same failure, saying which setting names the server."""
        return DatabaseUnreachable(self.address, self.reason, setting=setting)


class SchemaOutOfDate(DatabaseError):
    """The database schema is older (or newer) than this version of Ronin expects."""

    code = "SCHEMA_OUT_OF_DATE"


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL server could not be started."""

    code = "EMBEDDED_SERVER_ERROR"


class InvalidTarget(InvalidValue):
    """Job parameters that break PROTOCOL.md section 5; ``field`` names the culprit."""

    code = "INVALID_TARGET"
    permanent = True


class ForbiddenTarget(RoninError):
    """A target the node's scope policy does not allow (PROTOCOL.md section 6)."""

    code = "FORBIDDEN_TARGET"
    http_status = 403
    permanent = True


class NotFound(RoninError):
    """No such job, service or schedule."""

    code = "NOT_FOUND"
    http_status = 404


class JobFinished(RoninError):
    """The job already ended; it cannot be cancelled or changed."""

    code = "JOB_FINISHED"
    http_status = 409


class InvalidJson(InvalidValue):
    """A request body that does not parse as JSON."""

    code = "INVALID_JSON"
    http_status = 400


class PayloadTooLarge(RoninError):
    """A request body larger than the API accepts."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class EmptyBatch(InvalidValue):
    """A batch submission whose list of jobs is empty."""

    code = "EMPTY_BATCH"
    http_status = 400


class TooManyJobs(PayloadTooLarge):
    """A batch submission of more jobs than one request may carry."""

    code = "TOO_MANY_JOBS"


class QueueFull(RoninError):
    """More jobs are pending than the node accepts (RONIN_MAX_PENDING_JOBS): refused at once,
    so a flood does not slow every submission down; the client retries after
    ``retry_after_s``."""

    code = "QUEUE_FULL"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatchRefused(RoninError):
    """A batch submission of which no job was accepted; each item says why."""

    code = "BATCH_REFUSED"
    http_status = 422


class Unauthenticated(RoninError):
    """A request without a bearer token, or with one the node does not know."""

    code = "UNAUTHENTICATED"
    http_status = 401


class InsufficientScope(RoninError):
    """A token whose scope does not allow the route (a read token on a write route)."""

    code = "INSUFFICIENT_SCOPE"
    http_status = 403


class UnsupportedMessage(RoninError):
    """A KLF message type or task this node does not handle."""

    code = "UNSUPPORTED_MESSAGE"
    http_status = 422


class AlreadyExists(RoninError):
    """A name already taken (a schedule's)."""

    code = "ALREADY_EXISTS"
    http_status = 409


class ScanFailed(RoninError):
    """The discovery itself cannot succeed; retrying would not help."""

    code = "SCAN_FAILED"
    permanent = True

    @classmethod
    def gave_up(cls, attempts: int, why: str | None = None) -> ScanFailed:
        """A job that failed (or was claimed) more times than it may be attempted."""
        reason = f": {why}" if why else ""
        return cls(f"gave up after {attempts} attempts{reason}")


class JobTimedOut(RoninError):
    """The job ran longer than the worker's job timeout."""

    code = "TIMEOUT"
    permanent = True

    def __init__(self, timeout: object) -> None:
        super().__init__(f"the job ran longer than {timeout}")


class JobCancelled(RoninError):
    """An operator cancelled the job."""

    code = "CANCELLED"
    permanent = True

    def __init__(self, message: str = "cancelled by an operator") -> None:
        super().__init__(message)


class TransientFailure(RoninError):
    """An attempt failed with something other than a Ronin error; the job retries."""

    code = "TRANSIENT"

    @classmethod
    def of(cls, error: BaseException) -> RoninError:
        """``error`` itself if it is a Ronin error, else it wrapped."""
        return error if isinstance(error, RoninError) else cls(repr(error))


class Interrupted(RoninError):
    """The command was interrupted before the job ended; the message says where it is."""

    code = "INTERRUPTED"


class BindFailed(RoninError):
    """The API could not listen on the address asked for."""

    code = "BIND_FAILED"


class RemoteError(RoninError):
    """An error answer from a remote node, with the code it gave."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class RemoteUnreachable(RoninError):
    """The remote node (``RONIN_URL``) could not be reached: a network failure, not the
    database's."""

    code = "REMOTE_UNREACHABLE"
    http_status = 503

    def __init__(self, url: str, reason: str, *, lost: bool = False) -> None:
        verb = "Lost the connection to" if lost else "Could not reach"
        super().__init__(f"{verb} the node at {url} (RONIN_URL): {reason}")
        self.url = url
        self.reason = reason
