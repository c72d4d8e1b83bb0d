"""`agent-ops serve` as a real process under hostile clients: huge or stalled bodies, half-sent requests,
idle connections, forged X-Forwarded-For, key guessing from everywhere, and what reaches the access log.

Raw sockets where a client must misbehave in ways httpx will not; the server's memory is read from
/proc/<pid>/status around a request.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent_ops import Ops
from agent_ops.processes import Processes
from agent_ops.server import BackgroundServer, create_app
from tests.kit.children import environment
from tests.kit.settings import direct_settings

KEY = "ops-key-for-serve-tests"
MIB = 1024 * 1024


@dataclass
class Served:
    url: str
    port: int
    pid: int
    log: Path

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


Serve = Callable[..., Served]


@pytest.fixture
def serve(db_url: str, tmp_path: Path) -> Iterator[Serve]:
    """Starts `agent-ops serve --port 0 <flags>` with OPS_KEY (which also opens the console) and more env."""
    environ = environment(DATABASE_URL=db_url, OPS_KEY=KEY, PYTHONUNBUFFERED="1")
    with Processes(tmp_path, environ=environ, cwd=tmp_path) as processes:

        def start(*flags: str, **extra_env: str) -> Served:
            name = f"serve-{len(processes.children)}"
            argv = [sys.executable, "-m", "agent_ops", "serve", "--port", "0", *flags]
            process = processes.start(name, argv, extra_env)
            log = processes.log_path(name)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", processes.log(name))
                if found:
                    port = int(found.group(1))
                    return Served(f"http://127.0.0.1:{port}", port, process.pid, log)
                if process.poll() is not None:
                    break
                time.sleep(0.05)
            raise AssertionError(f"agent-ops serve did not start:\n{processes.log(name)}")

        yield start
        processes.stop(signal.SIGINT, timeout=10)


def read_response(sock: socket.socket) -> bytes:
    """One response: its head, then its body by Content-Length, or until the server closes."""
    data = b""
    try:
        while True:
            head, found, body = data.partition(b"\r\n\r\n")
            if found:
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    return data
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data  # the server closed on a body it would not read; what it answered first is kept


def exchange(port: int, head: str, body: Iterable[bytes] = ()) -> bytes:
    """Sends a request head and then body pieces, stopping as soon as the server answers (it may answer early)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode())
        for piece in body:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
        return read_response(sock)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split()[1])


def login_head(length: int | None) -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        "POST /console/login HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
    )


def many_fields(size: int, piece: int = 16 * 1024) -> Iterator[bytes]:
    """`size` bytes of tiny form fields, the costliest shape for a form parser, in `piece`-byte pieces."""
    block = b"a=b&" * (piece // 4)
    for _ in range(size // len(block)):
        yield block


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def closed_after(port: int, sends: Iterable[tuple[float, bytes]], limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes a connection that sends `sends` ((delay, bytes) pairs) and then waits."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        started = time.monotonic()
        received = b""
        pending = list(sends)
        while True:
            wait = pending[0][0] if pending else limit
            if select.select([sock], [], [], wait)[0]:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return time.monotonic() - started, received
                received += chunk
            elif pending:
                try:
                    sock.sendall(pending.pop(0)[1])
                except OSError:
                    return time.monotonic() - started, received
            else:
                pytest.fail(f"still open after {time.monotonic() - started:.1f} s, having received {received!r}")


# --- bodies ------------------------------------------------------------------------------------------------------


def test_a_10_mib_login_body_is_refused_with_413_before_it_is_read(serve: Serve) -> None:
    server = serve()
    small = b"csrf=x&key=y"
    assert status_of(exchange(server.port, login_head(len(small)), [small])) == 403, "a small form is still read"
    exchange(server.port, login_head(100 * 1024), many_fields(100 * 1024))  # warm-up: whatever the answer takes
    for _ in range(3):
        before = server.rss_kib()
        response = exchange(server.port, login_head(10 * MIB), many_fields(10 * MIB))
        growth = server.rss_kib() - before
        assert growth < 4 * 1024, f"the server grew by {growth} KiB"
        assert status_of(response) == 413
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_chunked_login_body_is_cut_off_with_413_once_it_passes_the_cap(serve: Serve) -> None:
    server = serve()
    exchange(server.port, login_head(None), chunked(many_fields(100 * 1024)))  # warm-up
    for _ in range(3):
        before = server.rss_kib()
        response = exchange(server.port, login_head(None), chunked(many_fields(10 * MIB)))
        growth = server.rss_kib() - before
        assert growth < 4 * 1024, f"the server grew by {growth} KiB"
        assert status_of(response) == 413
        assert b"request body too large" in response


def test_a_stalled_body_is_answered_408_and_closed(serve: Serve) -> None:
    server = serve("--body-timeout", "1")
    seconds, answer = closed_after(server.port, [(0, login_head(100).encode() + b"csrf=x&ke")], limit=5)
    assert status_of(answer) == 408
    assert seconds < 3


# --- connections -------------------------------------------------------------------------------------------------


def test_idle_and_half_sent_connections_are_closed(serve: Serve) -> None:
    server = serve("--header-timeout", "1", "--keep-alive-timeout", "1")
    seconds, _ = closed_after(server.port, [], limit=5)
    assert seconds < 2.5, "a connection that sends nothing"
    seconds, _ = closed_after(server.port, [(0, b"GET /healthz HT")], limit=5)
    assert seconds < 2.5, "half a request line"
    trickle = [(0.0, b"G"), *((0.3, byte.encode()) for byte in "ET /healthz HTTP/1.1\r\nHost: x\r\n")]
    seconds, answer = closed_after(server.port, trickle, limit=5)
    assert seconds < 2.5, "a request head trickled one byte at a time gets no more time"
    assert answer == b""
    seconds, answer = closed_after(server.port, [(0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")], limit=5)
    assert status_of(answer) == 200
    assert seconds < 2.5, "an idle keep-alive connection after its answer"


def test_the_background_server_closes_half_sent_requests_too(db_url: str) -> None:
    with Ops(direct_settings(db_url)) as ops, BackgroundServer(create_app(ops), header_timeout=1) as server:
        port = int(server.url.rsplit(":", 1)[1])
        seconds, _ = closed_after(port, [(0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")], limit=5)
        assert seconds < 2.5
        assert httpx.get(f"{server.url}/healthz").status_code == 200


# --- who the client is, and key guessing -----------------------------------------------------------------------


def sign_in(client: httpx.Client, key: str, forwarded_for: str) -> int:
    headers = {"x-forwarded-for": forwarded_for}
    page = client.get("/console/login", headers=headers).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return client.post("/console/login", data={"csrf": csrf, "key": key}, headers=headers).status_code


def test_serve_ignores_forwarded_for_unless_told_which_proxies_to_trust(serve: Serve) -> None:
    plain = serve()
    with httpx.Client(base_url=plain.url) as client:
        codes = [sign_in(client, "guess", f"203.0.113.{n}") for n in range(1, 8)]
    assert codes == [401] * 5 + [429] * 2, "a rotating X-Forwarded-For is one client: the peer"
    assert "X-Forwarded-For is ignored" in plain.output()
    for proxied in (serve("--forwarded-allow-ips", "127.0.0.1"), serve(AGENT_OPS_FORWARDED_ALLOW_IPS="127.0.0.1")):
        with httpx.Client(base_url=proxied.url) as client:
            assert [sign_in(client, "guess", "203.0.113.1") for _ in range(6)] == [401] * 5 + [429]
            assert sign_in(client, KEY, "203.0.113.2") == 303, "behind a trusted proxy each client counts alone"


def test_the_global_cap_on_wrong_keys_trips_with_a_log_line(serve: Serve) -> None:
    server = serve("--key-failures-per-minute", "3")
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.post("/api/ops/heartbeat", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert client.post("/api/ops/heartbeat", headers={"Authorization": f"Bearer {KEY}"}).status_code == 429
    deadline = time.monotonic() + 5
    while "key throttle tripped" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "WARNING:  key throttle tripped: 3 wrong keys from all clients within 60 s" in server.output()


# --- logs --------------------------------------------------------------------------------------------------------


def test_the_access_log_leaves_out_query_strings(serve: Serve) -> None:
    server = serve("--log-level", "info")
    assert httpx.get(f"{server.url}/healthz?key=hunter2-in-a-url&token=t0ken").status_code == 200
    assert httpx.get(f"{server.url}/api/ops/heartbeat?key=hunter2-in-a-url").status_code == 401
    deadline = time.monotonic() + 5
    while '"GET /api/ops/heartbeat HTTP/1.1" 401' not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.output()
    assert '"GET /healthz HTTP/1.1" 200' in log
    assert '"GET /api/ops/heartbeat HTTP/1.1" 401' in log
    assert "hunter2" not in log
    assert "t0ken" not in log
