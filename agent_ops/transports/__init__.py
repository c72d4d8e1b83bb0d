"""Two ways to call the same ops_* SQL functions: PostgREST over HTTP, or a direct Postgres connection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agent_ops.config import Settings

# What `Transport.listening` yields: poll(timeout seconds) -> the payloads of the notifications received.
Poll = Callable[[float], list[str]]


class Transport(Protocol):
    name: str
    # Whether `listening` works: LISTEN needs a session on the database (the direct transport); through
    # PostgREST there is none, and callers poll instead.
    supports_listen: bool

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Run `public.<function>` with named arguments; return its JSON result. Raises OpsError subclasses."""
        ...

    def listening(self, channel: str) -> AbstractContextManager[Poll]:
        """LISTEN on `channel` for as long as the context lasts; yields `poll`. Only when `supports_listen`;
        otherwise it raises NotImplementedError. Connection failures raise TransportError."""
        ...

    def close(self) -> None: ...


def make_transport(settings: Settings) -> Transport:
    """The transport the settings choose (DATABASE_URL → direct, SUPABASE_URL → PostgREST)."""
    settings = settings.validated()
    if settings.chosen_transport == "direct":
        from agent_ops.transports.direct import DirectTransport  # noqa: PLC0415 - keep supabase out of direct users

        return DirectTransport(settings)
    from agent_ops.transports.rest import PostgrestTransport  # noqa: PLC0415 - imported only when used

    return PostgrestTransport(settings)
