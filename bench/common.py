"""What the benchmarks and the chaos suite share: scratch databases, worker processes, timing."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg.types.json import Jsonb

from agent_ops.localpg import LocalPostgres
from agent_ops.migrations import apply_seed, migrate

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"
LOGS = ROOT / ".agent-ops" / "log" / "bench"


def progress(message: str) -> None:
    sys.stderr.write(f"  · {message}\n")
    sys.stderr.flush()


def server() -> LocalPostgres:
    local = LocalPostgres(ROOT / ".agent-ops")
    local.start()
    return local


@contextmanager
def scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A new database on the embedded server (optionally a copy of `template`), dropped afterwards."""
    local = server()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = local.url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        clause = f' template "{template}"' if template else ""
        conn.execute(f'create database "{name}"{clause}'.encode())
    try:
        yield local.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)'.encode())


def agent_ops_database(url: str, policy: dict[str, Any] | None = None, drop_keys: Sequence[str] = ()) -> None:
    """Migrate, seed and set policy for a benchmark: no quotas in the way unless asked."""
    migrate(url, MIGRATIONS)
    apply_seed(url, SEED)
    with psycopg.connect(url, autocommit=True) as conn:
        for key in drop_keys:
            conn.execute("delete from public.ops_policy where key = %s", (key,))
        for key, value in (policy or {}).items():
            conn.execute("select public.ops_set_policy(%s, %s, 'bench')", (key, Jsonb(value)))


# Finished history, written in bulk with status triggers off, spread over the 29 days before a point 5 hours
# ago: older than every trigger lookback, inside the seed's 30-day retention.
HISTORY = """
set session_replication_role = replica;
insert into public.ops_mission_proposals
  (agent_id, title, proposed_steps, source, status, auto_approved, decided_by, decided_at, created_at, updated_at)
select 'agent-' || g %% 50, 'history ' || g, '[{"kind": "crawl"}, {"kind": "analyze"}, {"kind": "write_content"}]',
       'api', 'accepted', true, 'auto', t.at, t.at, t.at
  from generate_series(1, %(missions)s) g
 cross join lateral (select now() - interval '5 hours' - g * (interval '29 days' / %(missions)s) as at) t;
insert into public.ops_missions (proposal_id, agent_id, title, status, created_at, started_at, finalized_at, updated_at)
select p.id, p.agent_id, p.title, 'succeeded', p.created_at, p.created_at, p.created_at + interval '1 minute',
       p.created_at + interval '1 minute'
  from public.ops_mission_proposals p where p.title like 'history %%';
insert into public.ops_mission_steps
  (mission_id, position, kind, depends_on, status, output, attempt, started_at, finished_at, created_at)
select m.id, k.n, k.kind, case when k.n = 0 then '{}'::int[] else array[k.n - 1] end, 'succeeded', '{}', 1,
       m.created_at, m.created_at + interval '20 seconds', m.created_at
  from public.ops_missions m
 cross join (values (0, 'crawl'), (1, 'analyze'), (2, 'write_content')) as k(n, kind)
 where m.title like 'history %%';
insert into public.ops_agent_events (type, agent_id, source, tags, title, payload, mission_id, created_at)
select k.type, 'agent-' || g %% 50, 'system', array[k.type, split_part(k.type, ':', 1), split_part(k.type, ':', 2)],
       k.type, jsonb_build_object('n', g, 'engagement_rate', (g %% 100) / 1000.0), g %% %(missions)s + 1,
       now() - interval '5 hours' - g * (interval '29 days' / greatest(%(events)s, 1))
  from generate_series(1, %(events)s) g
 cross join lateral (select (array['step:succeeded', 'step:running', 'mission:succeeded', 'proposal:created',
                                   'tweet:metrics', 'tweet:posted', 'mission:failed', 'content:published',
                                   'insight:promoted', 'step:queued'])[g %% 10 + 1] as type) k;
set session_replication_role = origin;
"""


def write_history(conn: psycopg.Connection, missions: int, events: int) -> None:
    """`missions` finished 3-step missions (with their proposals) and `events` events, vacuumed and analyzed."""
    with psycopg.ClientCursor(conn) as cursor:
        cursor.execute(HISTORY, {"missions": missions, "events": events})
    conn.execute(b"vacuum analyze")
    # The bulk load's dirty pages are written now, not by the checkpointer during the measurement.
    conn.execute(b"checkpoint")


def scalar(url_or_conn: str | psycopg.Connection, query: str, params: Sequence[Any] = ()) -> Any:
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn, autocommit=True) as conn:
            return scalar(conn, query, params)
    row = url_or_conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


class Processes:
    """Child processes (workers) with their logs, stopped on exit."""

    def __init__(self, name: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None, tag: str = "") -> subprocess.Popen[bytes]:
        log = (LOGS / f"{self.name}{tag}-{len(self.children)}.log").open("wb")
        child = subprocess.Popen(
            list(argv), env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.children.append(child)
        return child

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(sig)
        for child in self.children:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def worker_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "vps_worker", *args]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Seconds it took; raises TimeoutError naming what never happened."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def rate_over_window(count: Callable[[], int], window: float, warmup_timeout: float = 60) -> float:
    """Completions per second over `window` seconds, measured after the first completion (start-up excluded)."""
    wait_until(lambda: count() > 0, warmup_timeout, "a first completion")
    time.sleep(0.5)
    start_count, start = count(), time.monotonic()
    time.sleep(window)
    return (count() - start_count) / (time.monotonic() - start)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lower, upper = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (k - lower)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
