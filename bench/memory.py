"""P7 — a worker's peak resident memory (VmHWM) with 8 steps running at once.

Two `vps-worker` processes on the same database: one stays idle (its VmHWM after start-up is the baseline),
the other runs 40 one-step missions of the built-in `sleep` executor (1 s each) with `--concurrency 8`, so
8 steps run at once in five waves; the highest count of running steps seen is printed with the figure.
Both are read from /proc/<pid>/status before the workers are stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from bench.common import bench_processes, progress
from tests.kit.children import wait_until
from tests.kit.database import QUOTA_KEYS, migrate_and_seed, scalar, scratch_database

MISSIONS = 40


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def run() -> dict[str, object]:
    progress("P7: worker peak RSS, idle and with 8 concurrent sleep steps")
    with scratch_database("bench_p7") as url:
        migrate_and_seed(
            url, policy={"auto_approve": {"enabled": True, "allowed_step_kinds": ["sleep"]}}, drop_keys=QUOTA_KEYS
        )
        with bench_processes("p7") as children, psycopg.connect(url, autocommit=True) as conn:
            env = {"DATABASE_URL": url}
            idle = children.start_worker("idle", "--kinds", "noop", "--worker-id", "idle", env=env)
            busy = children.start_worker(
                "busy", "--kinds", "sleep", "--concurrency", "8", "--worker-id", "busy", env=env
            )
            # Both have connected once their claims show up as backends; then the work arrives.
            wait_until(
                lambda: (
                    scalar(
                        conn,
                        "select count(*) from pg_stat_activity where datname = current_database()"
                        " and backend_type = 'client backend'",
                    )
                    >= 3
                ),
                60,
                "both workers connecting",
            )
            conn.execute(
                "select public.ops_create_proposal(jsonb_build_object('agent_id', 'bench', 'title', 'sleep ' || g,"
                ' \'steps\', \'[{"kind": "sleep", "payload": {"seconds": 1}}]\'::jsonb))'
                " from generate_series(1, %s) g",
                (MISSIONS,),
            )
            most_running = 0
            deadline = time.monotonic() + 120
            while scalar(conn, "select count(*) from public.ops_mission_steps where status = 'succeeded'") < MISSIONS:
                if time.monotonic() > deadline:
                    raise TimeoutError("the sleep steps did not finish within 120 s")
                running = int(scalar(conn, "select count(*) from public.ops_mission_steps where status = 'running'"))
                most_running = max(most_running, running)
                time.sleep(0.05)
            idle_kib, busy_kib = peak_rss_kib(idle.pid), peak_rss_kib(busy.pid)
    return {
        "idle_peak_mib": idle_kib / 1024,
        "busy_peak_mib": busy_kib / 1024,
        "ratio": busy_kib / idle_kib,
        "most_running_at_once": most_running,
    }
