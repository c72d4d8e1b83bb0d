"""What the benchmarks share beyond the test kit (tests/kit/): progress lines, bench logs, bulk history,
rates and percentiles."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence

import psycopg

from tests.kit.children import CheckoutProcesses, wait_until
from tests.kit.database import ROOT

LOGS = ROOT / ".agent-ops" / "log" / "bench"


def progress(message: str) -> None:
    sys.stderr.write(f"  · {message}\n")
    sys.stderr.flush()


def bench_processes(name: str) -> CheckoutProcesses:
    """Child processes of one measurement, logging to .agent-ops/log/bench/<name>/; stopped on exit."""
    return CheckoutProcesses(LOGS / name)


# Finished history, written in bulk with status triggers off, spread over the 29 days before a point 5 hours
# ago: older than every trigger lookback, inside supabase/seed.sql's 30-day retention.
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
