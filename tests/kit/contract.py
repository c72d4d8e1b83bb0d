"""Calling the ops_* functions as the API does, for the contract tests (tests/test_contract_*.py) and the
seeded races.

Every RPC is called the way the API calls it: on a connection that did `set role service_role`, with named
arguments. The owner connection (the `conn` fixture, a superuser) is used only to arrange scenarios the API
cannot reach and to read state back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agent_ops.client import step
from tests.kit.database import OPS_TABLES, rows, scalar

T = TypeVar("T")

KIND_RE = "^[a-z][a-z0-9_]{0,63}$"


def service_connection(db_url: str) -> psycopg.Connection:
    """An autocommit connection acting as the API does (role service_role)."""
    connection = psycopg.connect(db_url, autocommit=True)
    connection.execute("set role service_role")
    return connection


@contextmanager
def service(db_url: str) -> Iterator[psycopg.Connection]:
    connection = service_connection(db_url)
    try:
        yield connection
    finally:
        connection.close()


class AsJson:
    """Marks a value to be passed as jsonb (dicts always are; use this for JSON arrays, strings or null)."""

    def __init__(self, value: object) -> None:
        self.value = value


def _wrap(value: object) -> object:
    if isinstance(value, AsJson):
        return Jsonb(value.value)
    if isinstance(value, dict):
        return Jsonb(value)
    return value


def rpc(connection: psycopg.Connection, function: str, **arguments: object) -> Any:
    """`select public.<function>(name => value, ...)`; dicts (and AsJson values) are passed as jsonb."""
    parts = [sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder()) for name in arguments]
    query = sql.SQL("select public.{}({})").format(sql.Identifier(function), sql.SQL(", ").join(parts))
    row = connection.execute(query, [_wrap(v) for v in arguments.values()]).fetchone()
    assert row is not None
    return row[0]


def rpc_error(connection: psycopg.Connection, function: str, **arguments: object) -> psycopg.Error:
    """Calls the RPC, which must raise; returns the error."""
    try:
        result = rpc(connection, function, **arguments)
    except psycopg.Error as error:
        return error
    raise AssertionError(f"{function}({arguments!r}) did not fail; it returned {result!r}")


def message(error: psycopg.Error) -> str:
    return error.diag.message_primary or ""


def propose(
    connection: psycopg.Connection,
    steps: list[dict[str, Any]] | None = None,
    agent_id: str = "scout",
    title: str = "a mission",
    **extra: Any,
) -> dict[str, Any]:
    proposal: dict[str, Any] = {"agent_id": agent_id, "title": title, "steps": steps or [step("crawl")], **extra}
    return cast(dict[str, Any], rpc(connection, "ops_create_proposal", proposal=proposal))


def set_policy(connection: psycopg.Connection, key: str, value: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], rpc(connection, "ops_set_policy", key=key, value=value, updated_by="contract-test"))


def get_policy(connection: psycopg.Connection, key: str) -> dict[str, Any]:
    return cast(dict[str, Any], rpc(connection, "ops_get_policy", key=key)["value"])


def update_policy(connection: psycopg.Connection, key: str, **changes: Any) -> dict[str, Any]:
    """Read a policy key's value, change some of its fields, write it back; returns the new value."""
    value = {**get_policy(connection, key), **changes}
    set_policy(connection, key, value)
    return value


def claim(
    connection: psycopg.Connection,
    worker_id: str = "worker-1",
    kinds: list[str] | None = None,
    max_steps: int = 1,
    lease_seconds: int | None = None,
) -> list[dict[str, Any]]:
    return cast(
        list[dict[str, Any]],
        rpc(
            connection,
            "ops_claim_next_step",
            worker_id=worker_id,
            kinds=kinds,
            max_steps=max_steps,
            lease_seconds=lease_seconds,
        ),
    )


def complete(
    connection: psycopg.Connection,
    step_id: int,
    attempt: int,
    output: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ops_complete_step; `usage` is sent only when given."""
    spent = {} if usage is None else {"usage": usage}
    return cast(
        dict[str, Any],
        rpc(connection, "ops_complete_step", step_id=step_id, attempt=attempt, output=output or {}, **spent),
    )


def fail(
    connection: psycopg.Connection,
    step_id: int,
    attempt: int,
    error: str = "boom",
    retryable: bool = True,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ops_fail_step; `usage` is sent only when given."""
    spent = {} if usage is None else {"usage": usage}
    return cast(
        dict[str, Any],
        rpc(connection, "ops_fail_step", step_id=step_id, attempt=attempt, error=error, retryable=retryable, **spent),
    )


def snapshot(owner: psycopg.Connection) -> dict[str, Any]:
    """Row counts of all eight ops tables, plus the full policy and trigger-rule state, the steps with their
    usage and the daily spend."""
    state: dict[str, Any] = {
        table: scalar(owner, sql.SQL("select count(*) from public.{}").format(sql.Identifier(table)))
        for table in OPS_TABLES
    }
    state["policy"] = rows(owner, b"select key, value, updated_at, updated_by from public.ops_policy order by key")
    state["steps"] = rows(
        owner,
        b"select id, status, attempt, output, last_error, lease_expires_at, usage from public.ops_mission_steps"
        b" order by id",
    )
    state["spend"] = rows(owner, b"select * from public.ops_spend_daily order by day, agent_id")
    state["missions"] = rows(owner, b"select id, status, finalized_at from public.ops_missions order by id")
    state["proposals"] = rows(owner, b"select id, status, decided_at from public.ops_mission_proposals order by id")
    return state


def events(owner: psycopg.Connection, type_: str | None = None, **ids: int) -> list[dict[str, Any]]:
    """Events as dicts, oldest first, optionally filtered by type and by proposal_id / mission_id / step_id."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if type_ is not None:
        conditions.append(sql.SQL("type = %s"))
        params.append(type_)
    for column, value in ids.items():
        conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
        params.append(value)
    query = sql.SQL(
        "select id, type, agent_id, tags, payload, proposal_id, mission_id, step_id, created_at"
        " from public.ops_agent_events where {} order by id"
    ).format(sql.SQL(" and ").join(conditions))
    names = ("id", "type", "agent_id", "tags", "payload", "proposal_id", "mission_id", "step_id", "created_at")
    return [dict(zip(names, row, strict=True)) for row in rows(owner, query, params)]


def step_rows(owner: psycopg.Connection, mission_id: int) -> list[dict[str, Any]]:
    names = ("id", "position", "kind", "status", "attempt", "output", "last_error", "run_after", "depends_on")
    found = rows(
        owner,
        b"select id, position, kind, status, attempt, output, last_error, run_after, depends_on"
        b" from public.ops_mission_steps where mission_id = %s order by position",
        [mission_id],
    )
    return [dict(zip(names, row, strict=True)) for row in found]


def mission_status(owner: psycopg.Connection, mission_id: int) -> str:
    return cast(str, scalar(owner, b"select status from public.ops_missions where id = %s", [mission_id]))


def run_concurrently(
    db_url: str, count: int, work: Callable[[psycopg.Connection, int], T], timeout: float = 120.0
) -> list[T]:
    """Runs work(connection, index) in `count` threads, each on its own service_role connection, all released
    together by a barrier. Re-raises the first exception any thread raised."""
    connections = [service_connection(db_url) for _ in range(count)]
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    failures: list[BaseException] = []
    lock = threading.Lock()

    def runner(index: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = work(connections[index], index)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in threads), "a worker thread did not finish in time"
    finally:
        for connection in connections:
            connection.close()
    if failures:
        raise failures[0]
    return cast(list[T], results)
