"""P4 — what one `ops_heartbeat()` costs after 1,000 new events, on an empty history and on a long one.

Both databases get supabase/seed.sql's 8 trigger rules enabled (no skip probability) and the reaction matrix on, so
every heartbeat evaluates every rule, fires the due ones through ops_create_proposal and turns queued
reactions into proposals. The long history — 1,000,000 events and 100,000 finished 3-step missions — is
written in bulk (generate_series, status triggers off) over the 30 days before the longest trigger lookback,
inside the retention window: the steady state of a deployment whose retention has caught up.

Each round inserts 1,000 new events in one statement (tweet metrics and posts, failed missions, published
content, promoted insights, step results: what the rules and patterns look for), marks every rule due again,
and times one heartbeat from the client. Rounds alternate between the two databases, like P5's claims, so a
noisy moment on the machine falls on both (a first version ran all of one, then all of the other: the ratio
moved between 0.8 and 1.8 in three runs of the same code). The figure is the median of each database's 12
rounds; the ratio is long / empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from bench.common import median, progress, write_history
from tests.kit.database import migrate_and_seed, scalar, scratch_database

ROUNDS = 12

PREPARE = """
update public.ops_trigger_rules set enabled = true, skip_probability = 0;
update public.ops_policy set value = jsonb_set(value, '{enabled}', 'true') where key = 'reaction_matrix';
delete from public.ops_policy where key = 'max_active_missions';
update public.ops_policy set value = '{"limit": 100000}' where key = 'daily_proposal_limit';
"""

NEW_EVENTS = """
insert into public.ops_agent_events (type, agent_id, source, tags, title, payload)
select k.type, case when k.type = 'tweet:posted' then 'twitter-alt' else 'agent-' || g % 50 end, 'bench',
       array[k.type, split_part(k.type, ':', 1), split_part(k.type, ':', 2)], k.type || ' ' || g,
       jsonb_build_object('n', g, 'engagement_rate', random() / 10, 'tweet_id', g)
  from generate_series(1, 1000) g
 cross join lateral (select (array['tweet:metrics', 'tweet:posted', 'mission:failed', 'content:published',
                                   'insight:promoted', 'step:succeeded'])[g % 6 + 1] as type) k;
update public.ops_trigger_rules set next_due_at = null, last_evaluated_at = null;
"""


@contextmanager
def heartbeat_database(history: bool) -> Iterator[psycopg.Connection]:
    """A migrated, seeded database with every rule enabled (and the long history if asked), warmed up."""
    with scratch_database("bench_p4_history" if history else "bench_p4_empty") as url:
        migrate_and_seed(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PREPARE.encode())
            if history:
                progress("P4: writing 1,000,000 historical events and 100,000 finished missions")
                write_history(conn, missions=100_000, events=1_000_000)
            conn.execute(b"vacuum analyze")
            scalar(conn, "select public.ops_heartbeat()")  # warm-up: plans cached, first firings done
            yield conn


def heartbeat_round(conn: psycopg.Connection) -> float:
    """Seconds of one heartbeat after 1,000 new events (the insert is not timed)."""
    conn.execute(NEW_EVENTS.encode())
    started = time.perf_counter()
    result = scalar(conn, "select public.ops_heartbeat()")
    took = time.perf_counter() - started
    if not result.get("ok"):
        raise RuntimeError(f"heartbeat reported errors: {result.get('errors')}")
    return took


def run(rounds: int = ROUNDS) -> dict[str, object]:
    progress("P4: a database with an empty history and one with 1,000,000 events")
    empty_rounds: list[float] = []
    long_rounds: list[float] = []
    with heartbeat_database(history=False) as empty, heartbeat_database(history=True) as long:
        events = int(scalar(long, "select count(*) from public.ops_agent_events"))
        # Rounds alternate between the two (and which goes first), so drift on the machine falls on both alike.
        for n in range(rounds):
            pair = ((empty, empty_rounds), (long, long_rounds))
            for conn, timings in pair if n % 2 == 0 else reversed(pair):
                timings.append(heartbeat_round(conn))
    empty_ms, long_ms = median(empty_rounds) * 1000, median(long_rounds) * 1000
    return {
        "empty_ms": empty_ms,
        "history_ms": long_ms,
        "ratio": long_ms / empty_ms,
        # Each round's long / empty next to each other: a second view, robust to a slow stretch of rounds.
        "paired_ratio_median": median([b / a for a, b in zip(empty_rounds, long_rounds, strict=True)]),
        "rounds": rounds,
        "history_events": events,
        "rounds_empty_ms": [r * 1000 for r in empty_rounds],
        "rounds_history_ms": [r * 1000 for r in long_rounds],
    }
