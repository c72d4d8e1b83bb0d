"""A TCP proxy in front of Postgres that can lose one answer, for testing retries over real sockets.

`drop_next_response()` arms it: the next request a client sends still reaches the server (and commits),
but the server's answer is thrown away and both sockets are closed — a network failure after commit.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FlakyProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._armed = threading.Event()
        self._awaiting = threading.Event()
        self.dropped = 0
        self._closed = False
        threading.Thread(target=self._accept, name="flaky-proxy", daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def drop_next_response(self) -> None:
        self._armed.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            threading.Thread(target=self._pump_requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_answers, args=(server, client), daemon=True).start()

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _pump_requests(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                if self._armed.is_set():
                    self._armed.clear()
                    self._awaiting.set()
                server.sendall(data)
        except OSError:
            pass
        self._shut(client, server)

    def _pump_answers(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                if self._awaiting.is_set():
                    self._awaiting.clear()
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        self._shut(client, server)
