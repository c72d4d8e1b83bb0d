"""`agent-ops serve`: a small ASGI service with the seed's cron-hit endpoint.

- `GET|POST /api/ops/heartbeat` runs one heartbeat (SQL plus Python plug-ins) and returns its JSON. It needs
  `Authorization: Bearer <OPS_KEY>` (compared in constant time): 401 on a missing or wrong key, and 503 —
  never open — while OPS_KEY is unset.
- `GET /healthz` answers 200 while the process is up (`?db=1` also checks the database).
- `/console/` is the ops console (agent_ops/console): sign in with CONSOLE_KEY, or OPS_KEY when unset.
"""

from __future__ import annotations

import hmac
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import BaseRoute, Mount, Route

from agent_ops import __version__
from agent_ops.client import Ops
from agent_ops.console import ConsoleAccess, create_console
from agent_ops.errors import OpsError
from agent_ops.heartbeat import run_once
from agent_ops.triggers import PluginTrigger


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


def heartbeat_routes(ops: Ops, plugins: Sequence[PluginTrigger] = ()) -> list[BaseRoute]:
    ops_key = ops.settings.ops_key

    async def heartbeat(request: Request) -> JSONResponse:
        if ops_key is None:
            return JSONResponse({"error": "OPS_KEY is not set: the heartbeat endpoint stays closed"}, status_code=503)
        if not key_matches(bearer_token(request), ops_key.reveal()):
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
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


def create_app(ops: Ops, plugins: Sequence[PluginTrigger] = (), console: ConsoleAccess | None = None) -> Starlette:
    """The heartbeat endpoint, /healthz and the console (its key from `console`, else from the settings)."""

    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/console/", status_code=307)

    routes = [*heartbeat_routes(ops, plugins), Mount("/console", app=create_console(ops, console)), Route("/", home)]
    return Starlette(routes=routes)


class BackgroundServer:
    """Serves an app from a thread on 127.0.0.1:`port` (when taken or 0: any free port), e.g. the demo's console."""

    def __init__(self, app: Starlette, port: int = 0) -> None:
        import uvicorn  # noqa: PLC0415 - only servers need the ASGI server

        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, not {port}")
        try:
            self._socket = socket.create_server(("127.0.0.1", port))
        except OSError:
            self._socket = socket.create_server(("127.0.0.1", 0))
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
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
