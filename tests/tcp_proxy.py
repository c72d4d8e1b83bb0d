"""A TCP proxy in front of Postgres (or any TCP server) that can lose one answer, or add a fixed delay.

`drop_next_response()` arms it: the next request a client sends still reaches the server (and commits),
but the server's answer is thrown away and both sockets are closed — a network failure after commit.

`delay` (seconds, each way) holds every chunk of bytes for that long before passing it on, in both
directions, so a round trip through the proxy costs twice the delay more: a network between the client and the
server (bench/latency.py, P8). Each direction of each connection has a reader that stamps what it receives
and a sender that forwards it when due, in order: bytes are never reordered, and a stream keeps its
throughput (later chunks are read while earlier ones wait).

`python -m tests.tcp_proxy HOST:PORT --delay-ms N` runs one in a process of its own (benchmarks: the
delay must not wait for another thread's turn at the benchmark's interpreter lock) and prints
`listening on <port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

CHUNK = 65536


class FlakyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay: float = 0.0, port: int = 0) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        self._upstream = (upstream_host, upstream_port)
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", port))
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
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                self._shut(client)
                continue
            for sock in (client, server):
                # Forward each chunk as it comes: Nagle's algorithm would hold small writes for an ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump_requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_answers, args=(server, client), daemon=True).start()

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _request_sent(self) -> bool:
        """Before a request's bytes go to the server: an armed proxy now awaits that request's answer."""
        if self._armed.is_set():
            self._armed.clear()
            self._awaiting.set()
        return True

    def _answer_received(self) -> bool:
        """An answer arrived from the server: False (throw it away, close both) if it is the awaited one."""
        if self._awaiting.is_set():
            self._awaiting.clear()
            self.dropped += 1
            return False
        return True

    def _pump_requests(self, client: socket.socket, server: socket.socket) -> None:
        self._relay(client, server, before_send=self._request_sent)

    def _pump_answers(self, server: socket.socket, client: socket.socket) -> None:
        self._relay(server, client, on_receive=self._answer_received)

    def _relay(
        self,
        source: socket.socket,
        target: socket.socket,
        on_receive: Callable[[], bool] | None = None,
        before_send: Callable[[], bool] | None = None,
    ) -> None:
        """Bytes from `source` to `target` until either end closes; then both are closed."""
        if self.delay <= 0:
            try:
                while data := source.recv(CHUNK):
                    if on_receive is not None and not on_receive():
                        break
                    if before_send is not None:
                        before_send()
                    target.sendall(data)
            except OSError:
                pass
            self._shut(source, target)
            return
        due: queue.SimpleQueue[tuple[float, bytes | None]] = queue.SimpleQueue()
        sender = threading.Thread(target=self._send_when_due, args=(due, target, before_send), daemon=True)
        sender.start()
        try:
            while data := source.recv(CHUNK):
                if on_receive is not None and not on_receive():
                    break
                due.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        due.put((time.monotonic() + self.delay, None))  # what was read before the end still goes out
        sender.join()
        self._shut(source, target)

    @staticmethod
    def _send_when_due(
        due: queue.SimpleQueue[tuple[float, bytes | None]],
        target: socket.socket,
        before_send: Callable[[], bool] | None,
    ) -> None:
        try:
            while True:
                at, data = due.get()
                wait = at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    return
                if before_send is not None:
                    before_send()
                target.sendall(data)
        except OSError:
            return  # the target is gone: the other direction sees it and closes both


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tcp_proxy", description="a TCP proxy with a fixed delay")
    parser.add_argument("upstream", help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added delay each way, in milliseconds")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    proxy = FlakyProxy(host or "127.0.0.1", int(port), delay=args.delay_ms / 1000, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sys.stdout.write(f"listening on {proxy.port}\n")
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
