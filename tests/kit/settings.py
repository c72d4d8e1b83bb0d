"""Client settings for a test's database: the direct transport, or PostgREST through the stand-in."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from agent_ops.config import Secret, Settings
from tests.postgrest_standin import StandIn, make_key


def server_url(user: str, password: str | None, host: str, port: int | str, dbname: str) -> str:
    """A URL for the embedded server; its password is generated at first start (agent_ops.localpg)."""
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{user}{secret}@{host}:{port}/{dbname}"


def direct_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"timeout": 10, "connect_timeout": 2, "retries": 2, "pool_size": 2, **overrides}
    return Settings(database_url=Secret(url), **values)


def rest_settings(server: StandIn, role: str = "service_role", **overrides: Any) -> Settings:
    values: dict[str, Any] = {"timeout": 10, "connect_timeout": 2, "retries": 2, **overrides}
    return Settings(supabase_url=server.url, supabase_key=Secret(make_key(role)), **values)
