"""How agent_ops runs uvicorn (`agent-ops serve` and BackgroundServer alike).

- A client gets `header_timeout` seconds, from connecting or from the end of its previous response, to send
  a complete request head; then the connection is closed. uvicorn has no such limit of its own: a connection
  that sends nothing, or half a request line, stays open for ever and one client can hold thousands.
- An idle keep-alive connection is closed after `keep_alive_timeout` seconds.
- When the answer goes out before the request body is in (413 for a body over its cap), the rest of the body
  is read and dropped, up to IGNORED_BODY_BYTES and within `header_timeout`, before the connection is
  closed. Closing at once, with the client still sending, makes the kernel reset the connection and the
  client often never sees the 413; dropping costs no memory.
- X-Forwarded-For / X-Forwarded-Proto are believed only from the proxies in `forwarded_allow_ips`. uvicorn
  believes them from 127.0.0.1 by default, so anything local (or a proxy that passes the header through)
  could pick its own client address and with it dodge the key throttle.
- Access lines leave out query strings: a key or token someone put in a URL must not reach the logs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, cast

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 5
IGNORED_BODY_BYTES = 1024 * 1024


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not deliver a request head in time."""

    header_timeout: ClassVar[float] = HEADER_TIMEOUT
    _read_timer: asyncio.TimerHandle | None = None
    _ignored_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._ignoring_body():
            self._ignored_bytes += len(data)
            if self._ignored_bytes > IGNORED_BODY_BYTES:
                self.transport.close()
                return
        else:
            self._ignored_bytes = 0
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _ignoring_body(self) -> bool:
        """The answer is out and the client is still sending a body nobody will read (uvicorn drops it)."""
        return self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE

    def _waiting_on_client(self) -> bool:
        """Waiting for a request head, or for the rest of a body nobody will read."""
        return self.conn.their_state is h11.IDLE or self._ignoring_body()

    def _watch(self) -> None:
        # The deadline runs from when the wait began, not from the last byte: a client trickling its
        # request head one byte at a time gets no more time than one that sends nothing.
        if self.transport.is_closing() or not self._waiting_on_client():
            self._stop_timer()
        elif self._read_timer is None:
            self._read_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing() and self._waiting_on_client():
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    if seconds <= 0:
        raise ValueError(f"the header timeout must be positive, not {seconds}")
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})
    return cast("type[HeaderTimeoutProtocol]", protocol)


class QueryStringFilter(logging.Filter):
    """Cuts the query string from uvicorn's access lines (their third argument is the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


def hide_query_strings() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, QueryStringFilter) for existing in access.filters):
        access.addFilter(QueryStringFilter())


def server_config(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    lifespan: str = "auto",
    header_timeout: float = HEADER_TIMEOUT,
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT,
    forwarded_allow_ips: str | None = None,
) -> uvicorn.Config:
    """A uvicorn configuration with the limits above; proxy headers only with `forwarded_allow_ips`."""
    if keep_alive_timeout < 1:
        raise ValueError(f"the keep-alive timeout must be at least 1 second, not {keep_alive_timeout}")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "lifespan": lifespan,
        "http": protocol_with_header_timeout(header_timeout),
        "timeout_keep_alive": keep_alive_timeout,
        "proxy_headers": forwarded_allow_ips is not None,
    }
    if forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = forwarded_allow_ips
    config = uvicorn.Config(app, **options)
    hide_query_strings()  # after uvicorn.Config, which (re)configures its loggers
    return config
