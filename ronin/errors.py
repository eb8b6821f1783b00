"""Ronin's exception tree.

Each class carries the protocol error code (PROTOCOL.md section 5 where one applies) and the
HTTP status an API answer would use, so every layer reports a failure the same way::

    RoninError
    +-- InvalidValue            a value Ronin refuses before it reaches SQL or the network
    |   +-- UnstorableValue     a string or number PostgreSQL cannot store (NUL, surrogate, NaN)
    |   +-- InvalidCursor       a pagination cursor Ronin did not issue
    |   +-- InvalidTarget       job parameters that break PROTOCOL.md section 5
    |   +-- InvalidJson         a request body that is not JSON
    +-- PayloadTooLarge         a request body over the API's cap
    +-- Unauthenticated         no API token, or one the node does not know
    +-- InsufficientScope       a read-only token on a route that writes
    +-- UnsupportedMessage      a KLF message or task this node does not handle
    +-- ForbiddenTarget         a target outside the scope policy
    +-- NotFound                no such job, service or schedule
    +-- JobFinished             the job already ended
    +-- AlreadyExists           a schedule name already taken
    +-- DatabaseError           the database could not be reached or answered with an error
        +-- DatabaseUnreachable no connection could be opened to the server
        +-- SchemaOutOfDate     the schema is older than this Ronin; names the command that fixes it
        +-- EmbeddedServerError the embedded PostgreSQL could not be started
"""

from __future__ import annotations


class RoninError(Exception):
    """Base of every error Ronin raises on purpose."""

    code = "RONIN_ERROR"
    http_status = 500

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


class ForbiddenTarget(RoninError):
    """A target the node's scope policy does not allow (PROTOCOL.md section 6)."""

    code = "FORBIDDEN_TARGET"
    http_status = 403


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
