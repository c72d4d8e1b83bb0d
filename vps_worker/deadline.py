"""A total deadline for an HTTP request: connect, TLS, headers and body together.

httpx's timeouts apply to each network operation, so a server that trickles a byte every second holds a
request with a 5 s timeout for as long as it likes. `RequestDeadline` watches a request from another thread:
at its deadline, or as soon as the step is cancelled (ctx.cancelled), it shuts down the request's sockets,
which ends whatever read or write is waiting; the caller then sees `fired` and reports a timeout.

It learns the sockets from httpcore's `trace` request extension (the connect and TLS events carry the network
stream), so it needs a connection opened for the request: the built-in executors use a client per request
(http) or one that keeps no idle connections (llm). `trace_hook` is an httpx request event hook that lends
the calling thread's active deadline to every request a shared client sends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import httpx

WATCH_INTERVAL = 0.1  # how often the watcher looks at the step's cancellation

_active = threading.local()


class RequestDeadline:
    """`with RequestDeadline(seconds, cancelled) as deadline:` around one request (or a client call making one)."""

    def __init__(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        self.seconds = max(seconds, 0.0)
        self.until = time.monotonic() + self.seconds
        self.fired: str | None = None  # 'timed out' or 'cancelled', once it has cut the request off
        self._cancelled = cancelled or threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._over = False
        self._watcher = threading.Thread(target=self._watch, name="request-deadline", daemon=True)

    def left(self) -> float:
        """Seconds until the deadline (0 once passed): a timeout for the client, never longer than this."""
        return max(self.until - time.monotonic(), 0.0)

    def __enter__(self) -> Self:
        self._watcher.start()
        _active.deadline = self
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._over = True
        _active.deadline = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace extension: remember each connection's socket (plain, then TLS)."""
        if not event.endswith((".connect_tcp.complete", ".connect_unix_socket.complete", ".start_tls.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            if self.fired is not None:
                _cut(sock)

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._over:
                    return
            left = self.until - time.monotonic()
            if left <= 0:
                self._fire("timed out")
                return
            if self._cancelled.wait(min(left, WATCH_INTERVAL)):
                self._fire("cancelled")
                return

    def _fire(self, why: str) -> None:
        with self._lock:
            if self._over:
                return
            self.fired = why
            for sock in self._sockets:
                _cut(sock)


def _cut(sock: socket.socket) -> None:
    """Shut the connection down both ways: a blocked recv or send returns at once. The plain socket's method
    even for a TLS socket (SSLSocket.shutdown would drop its SSL object under the reading thread's feet)."""
    with contextlib.suppress(OSError):  # already closed, or detached when TLS wrapped it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def trace_hook(request: httpx.Request) -> None:
    """httpx request event hook: the calling thread's active RequestDeadline traces this request."""
    deadline: RequestDeadline | None = getattr(_active, "deadline", None)
    if deadline is not None:
        request.extensions["trace"] = deadline.trace
