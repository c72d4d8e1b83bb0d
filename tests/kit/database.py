"""Databases for the tests, the benchmarks and the chaos suite, and one-value queries against them."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agent_ops.localpg import LocalPostgres
from agent_ops.migrations import apply_seed, migrate

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"

# The eight ops tables.
OPS_TABLES = (
    "ops_mission_proposals",
    "ops_missions",
    "ops_mission_steps",
    "ops_agent_events",
    "ops_policy",
    "ops_agent_reactions",
    "ops_trigger_rules",
    "ops_action_runs",
)

# The policy keys that limit intake: without them no proposal is refused for volume.
QUOTA_KEYS = ("daily_proposal_limit", "max_active_missions")

Query = str | bytes | sql.SQL | sql.Composed
Params = Sequence[Any] | Mapping[str, Any] | None


def scalar(target: str | psycopg.Connection, query: Query, params: Params = None) -> Any:
    """The first column of the first row, or None when there is no row; `target` is a connection or a URL."""
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            return scalar(conn, query, params)
    found = target.execute(query, params).fetchone()
    return None if found is None else found[0]


def row(conn: psycopg.Connection, query: Query, params: Params = None) -> tuple[Any, ...]:
    """The one row the query must return."""
    found = conn.execute(query, params).fetchone()
    assert found is not None, f"no row: {query!r}"
    return found


def rows(conn: psycopg.Connection, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def embedded_server() -> LocalPostgres:
    """The server `agent-ops db start` runs for this checkout, started when it is not running."""
    server = LocalPostgres(ROOT / ".agent-ops")
    server.start()
    return server


@contextmanager
def scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A new database on the embedded server (optionally a copy of `template`), dropped afterwards."""
    server = embedded_server()
    admin = server.url("postgres")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        clause = f' template "{template}"' if template else ""
        conn.execute(f'create database "{name}"{clause}'.encode())
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)'.encode())


@contextmanager
def scratch_server(prefix: str) -> Iterator[LocalPostgres]:
    """A Postgres server of its own, to stop and restart at will; destroyed afterwards."""
    home = ROOT / ".agent-ops" / "scratch" / f"{prefix}-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    server = LocalPostgres(home)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)


def set_policies(url: str, policy: Mapping[str, Any] | None = None, drop_keys: Sequence[str] = ()) -> None:
    """Remove `drop_keys`, then set each key of `policy` through ops_set_policy (validated as the API is)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for key in drop_keys:
            conn.execute("delete from public.ops_policy where key = %s", (key,))
        for key, value in (policy or {}).items():
            conn.execute("select public.ops_set_policy(%s, %s, 'test-kit')", (key, Jsonb(value)))


def migrate_and_seed(url: str, policy: Mapping[str, Any] | None = None, drop_keys: Sequence[str] = ()) -> None:
    """The schema (`agent-ops migrate`) and the seed, then `set_policies(url, policy, drop_keys)`."""
    migrate(url, MIGRATIONS)
    apply_seed(url, SEED)
    set_policies(url, policy, drop_keys)
