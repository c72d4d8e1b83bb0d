"""P1 — throughput of the whole step cycle against the raw Postgres ceiling, in the same run.

agent-ops: missions of three sequential `noop` steps, worked by N real `vps-worker` processes on the direct
transport. Each step costs a claim, the executor, a fenced completion, its status events, dependency
promotion and, for the last step, mission finalization. Measured as the rate at which a backlog of 3,000
missions (9,000 steps) drains, from the first completion to the last, so every mission starts, runs its
three steps and is finalized inside the figure.

Raw ceiling: pgbench (the PostgreSQL client tools) running the bare minimum a queue needs — a `FOR UPDATE
SKIP LOCKED` claim of one row and its completion — on a plain table, with the same number of clients.

Between the two, to show where the gap is: pgbench calling `ops_claim_next_step` and `ops_complete_step`
itself (bench/ops_claim_complete.sql) — the agent-ops SQL with no Python in the loop — on the same backlog.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import psycopg

from bench.common import bench_processes, progress
from tests.kit.children import wait_until
from tests.kit.database import MIGRATIONS, QUOTA_KEYS, embedded_server, migrate_and_seed, scalar, scratch_database

RAW_SCRIPT = Path(__file__).with_name("raw_claim_complete.sql")
OPS_SCRIPT = Path(__file__).with_name("ops_claim_complete.sql")
THREE_NOOPS = '[{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]'
MISSIONS = 3000
UNFINISHED = "select count(*) from public.ops_mission_steps where status in ('pending', 'queued', 'running')"
DRAINED = (
    b"select count(*), min(finished_at), max(finished_at) from public.ops_mission_steps where status = 'succeeded'"
)


def pgbench(url: str, script: Path, clients: int, seconds: float = 0, transactions: int = 0) -> float:
    """Transactions per second of `script`, run for `seconds` or `transactions` per client."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    length = ["-t", str(transactions)] if transactions else ["-T", str(int(seconds))]
    tool = embedded_server().binaries.tool("pgbench")
    result = subprocess.run(
        [
            tool,
            "-n",
            "-c",
            str(clients),
            "-j",
            str(clients),
            *length,
            "-f",
            str(script),
            "-h",
            str(info["host"]),
            "-p",
            str(info["port"]),
            "-U",
            str(info["user"]),
            str(info["dbname"]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 600,
        # The password goes through the environment, never the command line other users can read.
        env={**os.environ, "PGPASSWORD": str(info.get("password") or "")},
    )
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if not match:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


def raw_ceiling(clients: int, seconds: float, rows: int = 400_000) -> float:
    """Jobs per second of the bare claim + complete on a plain table."""
    with scratch_database("bench_raw") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "create table jobs (id bigint generated always as identity primary key, status text not null, "
                "payload jsonb not null default '{}', locked_by text, locked_at timestamptz, finished_at timestamptz)"
            )
            conn.execute("create index jobs_queued on jobs (id) where status = 'queued'")
            conn.execute("insert into jobs (status) select 'queued' from generate_series(1, %s)", (rows,))
            conn.execute("vacuum analyze jobs")
        return pgbench(url, RAW_SCRIPT, clients, seconds)


def build_template(missions: int) -> str:
    """A migrated database full of queued 3-step noop missions; returns its name (a template to clone)."""
    local = embedded_server()
    # Named after this checkout's migrations too: checkouts of other revisions share the embedded server,
    # and a template left by one must never stand in for another's schema.
    schema = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(MIGRATIONS.glob("*.sql")))).hexdigest()[:8]
    name = f"bench_p1_tmpl_{missions}_{schema}"
    admin = local.url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if scalar(conn, "select count(*) from pg_database where datname = %s", (name,)):
            return name
        conn.execute(f'create database "{name}"'.encode())
    url = local.url(name)
    migrate_and_seed(
        url,
        policy={"auto_approve": {"enabled": True, "allowed_step_kinds": ["noop"]},
                "worker_policy": {"lease_seconds": 120, "max_attempts": 3}},
        drop_keys=QUOTA_KEYS,
    )  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select public.ops_create_proposal(jsonb_build_object('agent_id', 'bench', 'title', 'mission ' || g,"
            " 'steps', %s::jsonb)) from generate_series(1, %s) g",
            (THREE_NOOPS, missions),
        )
        conn.execute("vacuum analyze")
    return name


def drop_template(name: str) -> None:
    with psycopg.connect(embedded_server().url("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)'.encode())


def agent_ops_throughput(template: str, workers: int, concurrency: int) -> float:
    """Steps per second with `workers` vps-worker processes, each running up to `concurrency` steps."""
    with scratch_database("bench_p1", template=template) as url:
        with bench_processes(f"p1-w{workers}-c{concurrency}") as children:
            for n in range(workers):
                children.start_worker(
                    f"bench-{n}",
                    "--kinds",
                    "noop",
                    "--concurrency",
                    str(concurrency),
                    "--poll-min",
                    "0.05",
                    "--poll-max",
                    "0.2",
                    "--worker-id",
                    f"bench-{n}",
                    env={"DATABASE_URL": url},
                )
            wait_until(lambda: scalar(url, UNFINISHED) == 0, 600, "the backlog draining")
        return drain_rate(url)


def ops_sql_throughput(template: str, clients: int) -> float:
    """Steps per second of the agent-ops SQL alone: pgbench calling the claim and complete functions."""
    with scratch_database("bench_p1_sql", template=template) as url:
        # Claims that find nothing (the rest of the backlog waits on running steps) are cheap no-ops: spare
        # transactions let the backlog drain.
        pgbench(url, OPS_SCRIPT, clients, transactions=MISSIONS * 3 * 6 // 5 // clients)
        return drain_rate(url)


def drain_rate(url: str) -> float:
    """Steps per second from the first completion to the last (worker start-up is not in the figure)."""
    with psycopg.connect(url, autocommit=True) as conn:
        done, first, last = conn.execute(DRAINED).fetchone() or (0, None, None)
    if not done or first is None or last is None or last <= first:
        raise RuntimeError(f"no backlog was worked ({done} steps succeeded)")
    return float(done) / float((last - first).total_seconds())


def run(seconds: float = 8.0, clients: tuple[int, ...] = (1, 2, 4)) -> dict[str, object]:
    progress(f"P1: building a backlog of {MISSIONS:,} queued 3-step missions")
    template = build_template(MISSIONS)
    rows: list[dict[str, object]] = []
    try:
        for n in clients:
            progress(f"P1: raw SKIP LOCKED ceiling with {n} pgbench client(s)")
            ceiling = raw_ceiling(n, seconds)
            progress(f"P1: agent-ops SQL alone, {n} pgbench client(s) calling claim + complete")
            sql_only = ops_sql_throughput(template, n)
            progress(f"P1: agent-ops with {n} worker process(es), one step at a time")
            single = agent_ops_throughput(template, n, 1)
            progress(f"P1: agent-ops with {n} worker process(es), batch claims of up to 16")
            batch = agent_ops_throughput(template, n, 16)
            rows.append(
                {
                    "workers": n,
                    "raw_jobs_per_s": ceiling,
                    "sql_steps_per_s": sql_only,
                    "sql_ratio": sql_only / ceiling,
                    "steps_per_s": single,
                    "ratio": single / ceiling,
                    "batch_steps_per_s": batch,
                    "batch_ratio": batch / ceiling,
                }
            )
    finally:
        drop_template(template)
    return {"rows": rows}
