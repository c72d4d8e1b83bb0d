"""A local HTTP server that answers one byte at a time, `interval` seconds apart, for as long as the client
listens: in its status line and headers (paths starting /headers) or, after complete headers, in its body
(any other path). Every read the client makes gets a byte well within any per-read timeout, so only a total
deadline ends such a request."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Trickle: " + b"a" * 100_000
BODY_HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"


class Trickle:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.connections = 0
        self.closed_by_client: list[float] = []  # seconds each connection lasted, once the client hung up
        self._server = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="trickle", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        opened = time.monotonic()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path.startswith(b"/headers"):
                script = HEADERS
            else:
                conn.sendall(BODY_HEADERS)
                script = b"x" * 100_000
            try:
                for i in range(len(script)):
                    if self._stop.wait(self.interval):
                        return
                    conn.sendall(script[i : i + 1])
            except OSError:
                self.closed_by_client.append(time.monotonic() - opened)
                return
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
