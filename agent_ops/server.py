"""`agent-ops serve`: a small ASGI service with the seed's cron-hit endpoint.

- `GET|POST /api/ops/heartbeat` runs one heartbeat (SQL plus Python plug-ins) and returns its JSON. It needs
  `Authorization: Bearer <OPS_KEY>` (compared in constant time): 401 on a missing or wrong key, and 503 —
  never open — while OPS_KEY is unset.
- `GET /healthz` answers 200 while the process is up (`?db=1` also checks the database).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from agent_ops import __version__
from agent_ops.client import Ops
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


def create_app(ops: Ops, plugins: Sequence[PluginTrigger] = ()) -> Starlette:
    return Starlette(routes=heartbeat_routes(ops, plugins))
