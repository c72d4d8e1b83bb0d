"""One exception hierarchy for both transports, mapped from SQLSTATEs, PostgREST codes and HTTP statuses.

The SQL functions raise PT400 (invalid input), PT404 (not found) and PT409 (conflict); PostgREST turns those
into HTTP statuses, psycopg hands them over as SQLSTATEs. Either way callers see the same classes, each with
the SQL message, detail and hint. Only TransportError is worth retrying.
"""

from __future__ import annotations


class OpsError(Exception):
    """Any error from the agent-ops database API."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        self.hint = hint
        self.status = status

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"detail: {self.detail}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return " | ".join(parts)


class InvalidInput(OpsError):
    """PT400 and SQL data errors: the message names the field and the rule."""


class NotFound(OpsError):
    """PT404: the proposal, mission or step does not exist."""


class Conflict(OpsError):
    """PT409 and unique violations: not pending, lease lost, stale attempt, already final."""


class PermissionDenied(OpsError):
    """42501, HTTP 401/403: the key or role may not call this."""


class TransportError(OpsError):
    """The call may not have reached the database, or the database could not answer: safe to retry
    idempotent calls (network errors, timeouts, 5xx, serialization failures, admin shutdown)."""


# SQLSTATEs after which the same call may succeed: nothing was committed.
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53400"}
TRANSIENT_PREFIXES = ("08", "53")
TRANSIENT_PGRST = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}


def error_class(code: str | None, status: int | None = None) -> type[OpsError]:
    """The class for a SQLSTATE / PostgREST code, falling back on the HTTP status."""
    if code:
        if code in {"PT400", "P0001", "23502", "23514"} or code.startswith("22"):
            return InvalidInput
        if code == "PT404":
            return NotFound
        if code in ("PT409", "23505", "23503"):
            return Conflict
        if code == "42501" or code.startswith(("PGRST30", "28")):
            return PermissionDenied
        if code in TRANSIENT_SQLSTATES or code.startswith(TRANSIENT_PREFIXES) or code in TRANSIENT_PGRST:
            return TransportError
    if status is not None:
        if status in (401, 403):
            return PermissionDenied
        if status == 404:
            return NotFound
        if status in (502, 503, 504):
            return TransportError
    return OpsError
