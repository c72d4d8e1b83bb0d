"""R4 and R5: races decided inside Postgres.

R4 — gate race: 200 proposals sent at once (200 connections released by one barrier) against a quota of 5,
for each counted gate in turn: the per-agent daily proposal limit, a step kind's daily quota, and the cap on
active missions → exactly 5 accepted each time.

R5 — 10 heartbeats at once with due triggers (schedule, event, threshold and absence rules) → each rule
fires exactly once: one firing counted, one proposal. Then the same with 10 concurrent
`ops_evaluate_triggers()` calls, which skip the heartbeat's single-flight lock and meet only the rules' row
locks and dedupe keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.chaos.workload import check, verdict
from bench.common import agent_ops_database, progress, scratch_database


def at_once(url: str, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
    """Run each (query, params) on its own connection, all released together; returns each first column."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def call(n: int, query: str, params: Sequence[Any]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                barrier.wait(timeout=60)
                row = conn.execute(query.encode(), params).fetchone()
                results[n] = row[0] if row else None
        except Exception as error:  # reported in the figures, judged by the caller
            results[n] = error

    threads = [threading.Thread(target=call, args=(n, q, p)) for n, (q, p) in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


PROPOSE = "select public.ops_create_proposal(%s)"

GATES: dict[str, tuple[dict[str, Any], Callable[[int], dict[str, Any]]]] = {
    # name: (policy for a quota of 5, the n-th proposal)
    "daily_proposal_limit": (
        {"daily_proposal_limit": {"limit": 5}},
        lambda n: {"agent_id": "racer", "title": f"race {n}", "steps": [{"kind": "crawl"}]},
    ),
    "step_kind_quota": (
        {"step_kind_gates": {"write_content": {"daily_limit": 5}}},
        lambda n: {"agent_id": f"racer-{n}", "title": f"race {n}", "steps": [{"kind": "write_content"}]},
    ),
    "max_active_missions": (
        {"max_active_missions": {"limit": 5}},
        lambda n: {"agent_id": f"racer-{n}", "title": f"race {n}", "steps": [{"kind": "crawl"}]},
    ),
}


def gate_race(proposals: int = 200, quota: int = 5) -> dict[str, object]:
    figures: dict[str, object] = {"proposals": proposals, "quota": quota}
    failures: list[str] = []
    for gate, (policy, proposal) in GATES.items():
        progress(f"R4: {proposals} proposals at once against {gate} = {quota}")
        with scratch_database("chaos_r4") as url:
            agent_ops_database(
                url,
                policy={"auto_approve": {"enabled": True, "allowed_step_kinds": ["crawl", "write_content"]},
                        "daily_proposal_limit": {"limit": 100000}, "step_kind_gates": {},
                        "max_active_missions": {"limit": 100000}, **policy},
            )  # fmt: skip
            results = at_once(url, [(PROPOSE, (Jsonb(proposal(n)),)) for n in range(proposals)])
            errors = [r for r in results if not isinstance(r, dict)]
            accepted = sum(1 for r in results if isinstance(r, dict) and r.get("status") == "accepted")
            figures[gate] = accepted
            check(failures, not errors, f"{gate}: {len(errors)} calls failed, first: {errors[:1]}")
            check(failures, accepted == quota, f"{gate}: {accepted} accepted against a quota of {quota}")
    verdict("R4", failures)
    return figures


RULES = """
insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config, cooldown_minutes, enabled)
select r.name || '-' || g, r.trigger_event, r.conditions::jsonb,
       jsonb_build_object('agent_id', 'chaos', 'title', r.name || ' ' || g || ' fired', 'steps',
                          '[{"kind": "analyze"}]'::jsonb), 60, true
  from generate_series(1, %(copies)s) g
 cross join (values
   ('every-hour', 'schedule', '{}'),
   ('on-failure', 'event', '{"event_type": "mission:failed"}'),
   ('viral', 'threshold', '{"event_type": "tweet:metrics", "field": "engagement_rate", "op": ">", "value": 0.05}'),
   ('silence', 'absence', '{"event_type": "never:happens", "lookback_minutes": 60}')
 ) as r(name, trigger_event, conditions);
insert into public.ops_agent_events (type, agent_id, tags, payload)
values ('mission:failed', 'chaos', '{mission:failed,mission,failed}', '{}'),
       ('tweet:metrics', 'chaos', '{tweet:metrics,tweet,metrics}', '{"engagement_rate": 0.2}');
"""

FIRINGS = """
select r.name, r.fire_count,
       (select count(*) from public.ops_mission_proposals p where (p.metadata ->> 'trigger_rule_id')::bigint = r.id)
  from public.ops_trigger_rules r where r.enabled order by r.name
"""


def trigger_race(callers: int = 10, copies: int = 3) -> dict[str, object]:
    figures: dict[str, object] = {"callers": callers}
    failures: list[str] = []
    for function in ("ops_heartbeat", "ops_evaluate_triggers"):
        progress(f"R5: {callers} concurrent {function}() calls with {4 * copies} due rules")
        with scratch_database("chaos_r5") as url:
            agent_ops_database(url, drop_keys=("daily_proposal_limit", "max_active_missions"))
            with psycopg.connect(url, autocommit=True) as conn, psycopg.ClientCursor(conn) as cursor:
                cursor.execute(RULES, {"copies": copies})
            results = at_once(url, [(f"select public.{function}()", ())] * callers)
            with psycopg.connect(url, autocommit=True) as conn:
                firings = conn.execute(FIRINGS.encode()).fetchall()
        errors = [r for r in results if not isinstance(r, dict)]
        wrong = [(name, fired, proposals) for name, fired, proposals in firings if (fired, proposals) != (1, 1)]
        skipped = sum(1 for r in results if isinstance(r, dict) and r.get("skipped"))
        figures[function] = {"rules": len(firings), "fired_once": len(firings) - len(wrong), "busy_skips": skipped}
        check(failures, not errors, f"{function}: {len(errors)} calls failed, first: {errors[:1]}")
        check(failures, len(firings) == 4 * copies, f"{function}: {len(firings)} rules instead of {4 * copies}")
        check(failures, not wrong, f"{function}: rules not fired exactly once (name, fired, proposals): {wrong}")
    verdict("R5", failures)
    return figures
