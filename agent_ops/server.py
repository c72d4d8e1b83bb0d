"""`agent-ops serve`: a small ASGI service with the heartbeat endpoint a cron job calls, and the console.

- `GET|POST /api/ops/heartbeat` runs one heartbeat (SQL plus Python plug-ins) and returns its JSON. It needs
  `Authorization: Bearer <OPS_KEY>` (compared in constant time): 401 on a missing or wrong key, 429 while the
  client is throttled for wrong keys (agent_ops/throttle.py, shared with console sign-in), and 503 — never
  open — while OPS_KEY is unset.
- `GET /healthz` answers 200 while the process is up (`?db=1` also checks the database).
- `GET /metrics` is the Prometheus text format (agent_ops/metrics.py: one ops_metrics() call per scrape). It
  is open without a key only when `agent-ops serve` binds a loopback address and the request comes straight
  from a loopback peer (no Forwarded / X-Forwarded-For header, i.e. not through a reverse proxy); otherwise it
  needs the heartbeat endpoint's Bearer OPS_KEY, with the same throttle, and answers 503 while OPS_KEY is unset.
- `/console/` is the ops console (agent_ops/console): sign in with CONSOLE_KEY, or OPS_KEY when unset.

Every request body is capped before it is parsed (agent_ops/http_limits.py); every answer says
`Cache-Control: no-store` and `X-Content-Type-Options: nosniff` unless it sets its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_ops import __version__
from agent_ops.client import Ops
from agent_ops.console import ConsoleAccess, create_console
from agent_ops.console.app import LARGER_BODIES
from agent_ops.errors import OpsError
from agent_ops.heartbeat import run_once
from agent_ops.http_limits import BODY_TIMEOUT, FORM_BYTES, BodyLimit
from agent_ops.metrics import CONTENT_TYPE, registry_for, scrape
from agent_ops.throttle import KeyThrottle
from agent_ops.triggers import PluginTrigger

# Every answer, the JSON endpoints and static files included: nothing is cached by shared caches or the
# browser, and nothing is content-sniffed into something executable.
DEFAULT_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def loopback_host(host: str) -> bool:
    """Whether `agent-ops serve --host HOST` listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def key_refusal(request: Request, ops_key: str | None, guesses: KeyThrottle, closed: str) -> JSONResponse | None:
    """The answer to a request without the right `Authorization: Bearer <OPS_KEY>` (None: the key is right).

    503 `closed` while OPS_KEY is unset; 429 while the client is throttled for wrong keys (the key is not even
    looked at, so a 429 never tells a right guess from a wrong one); 401 on a missing or wrong key.
    """
    if ops_key is None:
        return JSONResponse({"error": closed}, status_code=503)
    client = request.client.host if request.client else None
    wait = guesses.wait(client)
    if wait > 0:
        return JSONResponse(
            {"error": f"too many wrong keys: try again in {wait:.0f} s"},
            status_code=429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    if not key_matches(bearer_token(request), ops_key):
        guesses.failed(client)
        return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    guesses.succeeded(client)
    return None


def heartbeat_routes(
    ops: Ops, plugins: Sequence[PluginTrigger] = (), throttle: KeyThrottle | None = None
) -> list[BaseRoute]:
    ops_key = ops.settings.ops_key
    guesses = throttle or KeyThrottle()

    async def heartbeat(request: Request) -> JSONResponse:
        closed = "OPS_KEY is not set: the heartbeat endpoint stays closed"
        refusal = key_refusal(request, ops_key.reveal() if ops_key else None, guesses, closed)
        if refusal is not None:
            return refusal
        run = await run_in_threadpool(run_once, ops, plugins)
        return JSONResponse(run.to_json(), status_code=200 if run.error is None else 503)

    async def healthz(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok", "version": __version__, "transport": ops.transport.name}
        if request.query_params.get("db"):
            try:
                status = await run_in_threadpool(ops.status)
            except OpsError as error:
                return JSONResponse({**body, "status": "degraded", "database": str(error)}, status_code=503)
            body["database"] = {"system_enabled": status.system_enabled}
        return JSONResponse(body)

    return [
        Route("/api/ops/heartbeat", heartbeat, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]


def metrics_routes(ops: Ops, throttle: KeyThrottle, *, open_on_loopback: bool = False) -> list[BaseRoute]:
    """`GET /metrics`: open to loopback peers when `open_on_loopback` (serve binds a loopback address) and the
    request was not forwarded by a proxy; else it needs the Bearer OPS_KEY (`key_refusal`)."""
    ops_key = ops.settings.ops_key
    registry = registry_for(ops)

    def without_key(request: Request) -> bool:
        if not open_on_loopback or request.client is None:
            return False
        if "forwarded" in request.headers or "x-forwarded-for" in request.headers:
            return False  # through a reverse proxy: the peer's address says nothing about the client
        return loopback_host(request.client.host)

    async def metrics(request: Request) -> Response:
        if not without_key(request):
            closed = "OPS_KEY is not set: /metrics needs it unless agent-ops serve binds a loopback address"
            refusal = key_refusal(request, ops_key.reveal() if ops_key else None, throttle, closed)
            if refusal is not None:
                return refusal
        body = await run_in_threadpool(scrape, registry)
        return Response(body, headers={"Content-Type": CONTENT_TYPE})

    return [Route("/metrics", metrics, methods=["GET"])]


class DefaultHeaders:
    """ASGI middleware: DEFAULT_HEADERS on every answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULT_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    ops: Ops,
    plugins: Sequence[PluginTrigger] = (),
    console: ConsoleAccess | None = None,
    *,
    throttle: KeyThrottle | None = None,
    body_timeout: float = BODY_TIMEOUT,
    metrics_open_on_loopback: bool = False,
) -> Starlette:
    """The heartbeat endpoint, /healthz, /metrics and the console (its key from `console`, else from the settings).

    One `throttle` counts wrong keys at the endpoint, /metrics and console sign-in alike.
    `metrics_open_on_loopback`: the server binds a loopback address, so /metrics may answer loopback peers
    without the key (`metrics_routes`).
    """
    guesses = throttle or KeyThrottle()

    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/console/", status_code=307)

    routes = [
        *heartbeat_routes(ops, plugins, guesses),
        *metrics_routes(ops, guesses, open_on_loopback=metrics_open_on_loopback),
        Mount("/console", app=create_console(ops, console, guesses)),
        Route("/", home),
    ]
    larger = {f"/console{prefix}": limit for prefix, limit in LARGER_BODIES.items()}
    middleware = [
        Middleware(DefaultHeaders),
        Middleware(BodyLimit, default=FORM_BYTES, larger=larger, timeout=body_timeout),
    ]
    return Starlette(routes=routes, middleware=middleware)


class BackgroundServer:
    """Serves an app from a thread on 127.0.0.1:`port` (when taken or 0: any free port), e.g. the demo's console.

    With the limits of `agent-ops serve` (agent_ops/http_server.py); X-Forwarded-For is believed only from
    `forwarded_allow_ips`, never by default.
    """

    def __init__(
        self,
        app: Starlette,
        port: int = 0,
        *,
        header_timeout: float | None = None,
        forwarded_allow_ips: str | None = None,
    ) -> None:
        import uvicorn  # noqa: PLC0415 - only servers need the ASGI server

        from agent_ops.http_server import HEADER_TIMEOUT, server_config  # noqa: PLC0415 - imports uvicorn

        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, not {port}")
        try:
            self._socket = socket.create_server(("127.0.0.1", port))
        except OSError:
            self._socket = socket.create_server(("127.0.0.1", 0))
        config = server_config(
            app,
            log_level="warning",
            lifespan="off",
            header_timeout=HEADER_TIMEOUT if header_timeout is None else header_timeout,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.__exit__()
            raise RuntimeError(f"the HTTP server did not start on {self.url}")
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
