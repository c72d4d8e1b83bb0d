"""P6 — wake-up latency: from the commit of `ops_create_proposal` to an idle worker's executor starting.

One `vps-worker` on the direct transport, idle, with the default poll interval (5-15 s) and the `stamp`
executor (bench/stamp_executor.py), which returns the wall-clock time it started. The bench process creates
an auto-approved one-step proposal on its own autocommit connection; the latency is the executor's start
minus the moment that call was sent. The commit lies somewhere inside the call, so this is an upper bound
(it includes the ~1 ms of the call itself); timing from the call's return instead can go negative, since a
NOTIFY-woken worker may start before the answer reaches the caller. Between
samples the worker is left idle for a random 0.3-1.3 s, so proposals land at random points of its wait.
With LISTEN (the default) the NOTIFY sent at commit wakes the worker; with `--no-listen` it waits for its
next poll.
"""

from __future__ import annotations

import random
import time
from functools import partial

import psycopg

from bench.common import bench_processes, percentile, progress
from tests.kit.children import wait_until
from tests.kit.database import QUOTA_KEYS, migrate_and_seed, scalar, scratch_database

PROPOSE = (
    "select (public.ops_create_proposal(jsonb_build_object('agent_id', 'bench', 'title', 'wake up',"
    " 'steps', '[{\"kind\": \"stamp\"}]'::jsonb)) ->> 'mission_id')::bigint"
)
STARTED = (
    "select (output ->> 'started_at')::float8 from public.ops_mission_steps"
    " where mission_id = %s and status = 'succeeded'"
)


def started(conn: psycopg.Connection, mission: int) -> bool:
    return scalar(conn, STARTED, (mission,)) is not None


def latencies(listen: bool, samples: int) -> list[float]:
    with scratch_database("bench_p6") as url:
        migrate_and_seed(
            url, policy={"auto_approve": {"enabled": True, "allowed_step_kinds": ["stamp"]}}, drop_keys=QUOTA_KEYS
        )
        args = ["--kinds", "stamp", "--executors", "bench.stamp_executor", "--concurrency", "1"]
        with (
            bench_processes(f"p6-{'listen' if listen else 'poll'}") as children,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            children.start_worker("worker", *args, *([] if listen else ["--no-listen"]), env={"DATABASE_URL": url})
            found: list[float] = []
            for n in range(samples + 1):
                time.sleep(random.uniform(0.3, 1.3))
                sent = time.time()
                mission = scalar(conn, PROPOSE)
                wait_until(partial(started, conn, mission), 60, f"the step of mission {mission}", 0.01)
                if n:  # the first sample also waits for the worker to start up
                    found.append(float(scalar(conn, STARTED, (mission,))) - sent)
                    progress(
                        f"P6 {'LISTEN' if listen else 'poll only'}: sample {n}/{samples}: {found[-1] * 1000:.1f} ms"
                    )
            return found


def run(listen_samples: int = 30, poll_samples: int = 8) -> dict[str, object]:
    progress("P6: wake-up latency of an idle worker with LISTEN")
    listening = latencies(True, listen_samples)
    progress("P6: wake-up latency of an idle worker polling only (default interval 5-15 s)")
    polling = latencies(False, poll_samples)
    return {
        "listen_p50_ms": percentile(listening, 0.5) * 1000,
        "listen_p95_ms": percentile(listening, 0.95) * 1000,
        "poll_p50_ms": percentile(polling, 0.5) * 1000,
        "poll_p95_ms": percentile(polling, 0.95) * 1000,
        "listen_samples": len(listening),
        "poll_samples": len(polling),
    }
