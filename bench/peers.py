"""P2 — the same noop workload through procrastinate and pgqueuer, same worker counts, same server, same run.

Each peer gets its own database on the embedded server, its own schema (installed by its own tooling), and
enough queued jobs for the window; its worker processes are started with their own CLIs, one job at a time
(procrastinate --concurrency 1; pgqueuer batch size 1, the smallest concurrency it allows: 2). Throughput is completed
jobs per second over the same window after start-up as P1.
"""

from __future__ import annotations

import subprocess
import sys

import psycopg

from bench.common import bench_processes, progress, rate_over_window
from tests.kit.children import environment
from tests.kit.database import ROOT, scalar, scratch_database

JOBS = 30_000


def _cli(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=environment(PYTHONPATH=str(ROOT), **env), check=True, capture_output=True, timeout=300)


def procrastinate_throughput(workers: int, seconds: float) -> float:
    with scratch_database("bench_procrastinate") as url:
        env = {"PEER_DATABASE_URL": url}
        app = ["-m", "procrastinate", "--app", "bench.peer_apps.procrastinate_app"]
        _cli([sys.executable, *app, "schema", "--apply"], env)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into procrastinate_jobs (queue_name, task_name, args) "
                "select 'bench', 'noop', '{}'::jsonb from generate_series(1, %s)",
                (JOBS,),
            )
            conn.execute("vacuum analyze procrastinate_jobs")
        with bench_processes(f"p2-procrastinate-w{workers}") as children:
            for n in range(workers):
                children.start(
                    f"worker-{n}", [sys.executable, *app, "worker", "--concurrency", "1", "-q", "bench"], env
                )
            with psycopg.connect(url, autocommit=True) as conn:
                return rate_over_window(
                    lambda: int(scalar(conn, "select count(*) from procrastinate_jobs where status = 'succeeded'")),
                    seconds,
                )


def pgqueuer_throughput(workers: int, seconds: float, batch: int = 1) -> float:
    with scratch_database("bench_pgqueuer") as url:
        env = {"PEER_DATABASE_URL": url, "PGDSN": url}
        _cli([sys.executable, "-m", "pgqueuer", "install"], env)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into pgqueuer (priority, entrypoint, payload, status) "
                "select 0, 'noop', null, 'queued' from generate_series(1, %s)",
                (JOBS,),
            )
            conn.execute("vacuum analyze pgqueuer")
        with bench_processes(f"p2-pgqueuer-w{workers}-b{batch}") as children:
            consumer = f"import asyncio, bench.peer_apps as a; asyncio.run(a.run_pgqueuer({batch}))"
            for n in range(workers):
                children.start(f"worker-{n}", [sys.executable, "-c", consumer], env)
            with psycopg.connect(url, autocommit=True) as conn:
                return rate_over_window(
                    lambda: JOBS - int(scalar(conn, "select count(*) from pgqueuer where status = 'queued'")), seconds
                )


def run(seconds: float = 8.0, clients: tuple[int, ...] = (1, 2, 4)) -> dict[str, object]:
    rows = []
    for n in clients:
        progress(f"P2: procrastinate with {n} worker process(es)")
        procrastinate_rate = procrastinate_throughput(n, seconds)
        progress(f"P2: pgqueuer with {n} worker process(es)")
        pgqueuer_rate = pgqueuer_throughput(n, seconds)
        rows.append(
            {"workers": n, "procrastinate_jobs_per_s": procrastinate_rate, "pgqueuer_jobs_per_s": pgqueuer_rate}
        )
    return {"rows": rows}
