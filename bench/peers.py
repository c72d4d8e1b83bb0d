"""P2 — the same noop workload through procrastinate and pgqueuer, same worker counts, same server, same run.

Each peer gets its own database on the embedded server, its own schema (installed by its own tooling), and
enough queued jobs for the window; its worker processes are started with their own CLIs (pgqueuer: its
consumer loop, see bench/peer_apps.py). Two configurations each:

- one job at a time: procrastinate `--concurrency 1`; pgqueuer batch size 1 with at most 2 jobs in flight (the
  smallest concurrency it allows);
- its best documented configuration: procrastinate `--concurrency 16` running an async task (sync tasks go
  to a thread) with a connection pool of 16 (its default pool of 4 would cap the 16 jobs in flight);
  pgqueuer's defaults, batch size 10 (its `--batch-size` default: jobs dequeued, and their completions
  written, per round trip) and no cap on jobs in flight.

Throughput is completed jobs per second over the same window after start-up as P1 (procrastinate: jobs
`succeeded`; pgqueuer: jobs deleted from its queue table, which it does when it logs them done).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.common import bench_processes, progress, rate_over_window
from tests.kit.children import environment
from tests.kit.database import ROOT, scalar, scratch_database

JOBS = 150_000  # pgqueuer at batch size 10 drained 60,000 inside the window on a quiet machine (7,034 jobs/s)


@dataclass(frozen=True)
class Config:
    """How a peer's workers run: `concurrency` (procrastinate --concurrency, pgqueuer max jobs in flight,
    None for unlimited), `batch` (pgqueuer batch size), `pool` (procrastinate connection pool, 0: its
    default), `task` (the procrastinate task)."""

    label: str
    concurrency: int | None = 1
    batch: int = 1
    pool: int = 0
    task: str = "noop"


PROCRASTINATE = {
    "one": Config("--concurrency 1"),
    "best": Config("--concurrency 16", concurrency=16, pool=16, task="noop_async"),  # async task, pool of 16
}
PGQUEUER = {
    "one": Config("batch size 1", concurrency=2, batch=1),
    "best": Config("batch size 10", concurrency=None, batch=10),
}


def _cli(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=environment(PYTHONPATH=str(ROOT), **env), check=True, capture_output=True, timeout=300)


def _rate(completed: Callable[[], int], seconds: float) -> float:
    rate = rate_over_window(completed, seconds)
    if completed() > JOBS * 0.95:
        raise RuntimeError(f"P2: the queue ran out inside the window ({rate:.0f} jobs/s); raise JOBS")
    return rate


def procrastinate_throughput(workers: int, seconds: float, config: Config = PROCRASTINATE["one"]) -> float:
    with scratch_database("bench_procrastinate") as url:
        env = {"PEER_DATABASE_URL": url, **({"PEER_POOL_SIZE": str(config.pool)} if config.pool else {})}
        app = ["-m", "procrastinate", "--app", "bench.peer_apps.procrastinate_app"]
        _cli([sys.executable, *app, "schema", "--apply"], env)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into procrastinate_jobs (queue_name, task_name, args) "
                "select 'bench', %s, '{}'::jsonb from generate_series(1, %s)",
                (config.task, JOBS),
            )
            conn.execute("vacuum analyze procrastinate_jobs")
        with bench_processes(f"p2-procrastinate-w{workers}-c{config.concurrency}") as children:
            for n in range(workers):
                children.start(
                    f"worker-{n}",
                    [sys.executable, *app, "worker", "--concurrency", str(config.concurrency), "-q", "bench"],
                    env,
                )
            with psycopg.connect(url, autocommit=True) as conn:
                done = "select count(*) from procrastinate_jobs where status = 'succeeded'"
                return _rate(lambda: int(scalar(conn, done)), seconds)


def pgqueuer_throughput(workers: int, seconds: float, config: Config = PGQUEUER["one"]) -> float:
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
        with bench_processes(f"p2-pgqueuer-w{workers}-b{config.batch}") as children:
            consumer = (
                "import asyncio, bench.peer_apps as a; "
                f"asyncio.run(a.run_pgqueuer({config.batch}, {config.concurrency}))"
            )
            for n in range(workers):
                children.start(f"worker-{n}", [sys.executable, "-c", consumer], env)
            with psycopg.connect(url, autocommit=True) as conn:
                # Done jobs leave the queue table (pgqueuer deletes them as it logs them).
                return _rate(lambda: JOBS - int(scalar(conn, "select count(*) from pgqueuer")), seconds)


def run(seconds: float = 8.0, clients: tuple[int, ...] = (1, 2, 4)) -> dict[str, object]:
    rows = []
    for n in clients:
        row: dict[str, object] = {"workers": n}
        # One at a time, then the best configuration; each engine's two runs next to each other.
        for mode, key in (("one", ""), ("best", "_best")):
            progress(f"P2: procrastinate with {n} worker process(es), {PROCRASTINATE[mode].label}")
            row[f"procrastinate{key}_jobs_per_s"] = procrastinate_throughput(n, seconds, PROCRASTINATE[mode])
            progress(f"P2: pgqueuer with {n} worker process(es), {PGQUEUER[mode].label}")
            row[f"pgqueuer{key}_jobs_per_s"] = pgqueuer_throughput(n, seconds, PGQUEUER[mode])
        rows.append(row)
    return {
        "rows": rows,
        "configs": {
            "procrastinate": {mode: vars(config) for mode, config in PROCRASTINATE.items()},
            "pgqueuer": {mode: vars(config) for mode, config in PGQUEUER.items()},
        },
    }
