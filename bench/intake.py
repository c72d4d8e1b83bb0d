"""P3 — intake: proposals per second through ops_create_proposal, with the kill switch, the daily limit,
the cap gates and auto-approve checked, a 3-step mission created and every event written.

Baseline in the same run: the same rows written with plain INSERTs and no logic (one proposal, one mission,
three steps, six event rows), so the ratio is the cost of the rules themselves.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench.common import progress
from bench.throughput import pgbench
from tests.kit.database import migrate_and_seed, scratch_database

HERE = Path(__file__).parent


def proposals_per_second(clients: int, seconds: float) -> float:
    with scratch_database("bench_p3") as url:
        # Nobody works the missions here, so a max_active_missions gate would stop intake: that key is removed.
        migrate_and_seed(
            url,
            drop_keys=("max_active_missions",),
            policy={
                "auto_approve": {"enabled": True, "allowed_step_kinds": ["crawl", "analyze", "write_content"]},
                "daily_proposal_limit": {"limit": 1000000},
                "step_kind_gates": {"write_content": {"daily_limit": 1000000}, "deploy": {"enabled": False}},
            },
        )
        return pgbench(url, HERE / "intake_proposal.sql", clients, seconds)


def raw_rows_per_second(clients: int, seconds: float) -> float:
    with scratch_database("bench_p3_raw") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "create table p (id bigint generated always as identity primary key, agent_id text, title text,"
                " steps jsonb, status text, created_at timestamptz default now());"
                "create table m (id bigint generated always as identity primary key, proposal_id bigint, status text);"
                "create table s (id bigint generated always as identity primary key, mission_id bigint, position int,"
                " kind text, status text);"
                "create table e (id bigint generated always as identity primary key, type text, tags text[],"
                " payload jsonb, created_at timestamptz default now())"
            )
        return pgbench(url, HERE / "intake_raw.sql", clients, seconds)


def run(seconds: float = 6.0, clients: tuple[int, ...] = (1, 4)) -> dict[str, object]:
    rows = []
    for n in clients:
        progress(f"P3: ops_create_proposal with {n} client(s)")
        ours = proposals_per_second(n, seconds)
        progress(f"P3: the same rows as plain inserts with {n} client(s)")
        raw = raw_rows_per_second(n, seconds)
        rows.append({"clients": n, "proposals_per_s": ours, "raw_inserts_per_s": raw, "ratio": ours / raw})
    return {"rows": rows}
