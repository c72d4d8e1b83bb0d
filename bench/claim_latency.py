"""P5 — claim latency with 1,000 vs 1,000,000 finished steps in the table.

Each database holds the finished steps (bulk history, see bench.common.write_history) and 1,000 queued
single-step `noop` missions created through ops_create_proposal. One client per database on the direct transport —
the worker's own `Ops.claim` — claims one step at a time, in rounds alternating between the two databases;
only the claim round trip is timed, the completion that follows is not. Figures are p50/p95 over 600
claims each; the ratio is large / small.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from agent_ops.client import Ops
from agent_ops.config import Settings
from agent_ops.migrations import apply_seed, migrate
from bench.common import percentile, progress, write_history
from tests.kit.database import MIGRATIONS, QUOTA_KEYS, SEED, scratch_database, set_policies

QUEUED = 1000
ROUNDS = 6
CLAIMS_PER_ROUND = 100
WARMUP = 50


@contextmanager
def claim_database(finished_steps: int, schema: tuple[Path, Path] = (MIGRATIONS, SEED)) -> Iterator[Ops]:
    """A client on a database with `finished_steps` finished steps and QUEUED queued noop steps; `schema`: the
    migrations folder and seed to build it from (bench.claim_ab compares two)."""
    with scratch_database("bench_p5") as url:
        migrate(url, schema[0])
        apply_seed(url, schema[1])
        set_policies(url, {"auto_approve": {"enabled": True, "allowed_step_kinds": ["noop"]}}, QUOTA_KEYS)
        with psycopg.connect(url, autocommit=True) as conn:
            write_history(conn, missions=finished_steps // 3, events=0)
            conn.execute(
                "select public.ops_create_proposal(jsonb_build_object('agent_id', 'bench', 'title', 'claim ' || g,"
                " 'steps', '[{\"kind\": \"noop\"}]'::jsonb)) from generate_series(1, %s) g",
                (QUEUED,),
            )
            conn.execute(b"vacuum analyze")
        with Ops(Settings.load(database_url=url, transport="direct", pool_size=1)) as ops:
            claim_and_complete(ops, WARMUP)
            yield ops


def claim_and_complete(ops: Ops, claims: int) -> list[float]:
    """Seconds per claim round trip; each claimed step is completed, untimed."""
    timings = []
    for _ in range(claims):
        started = time.perf_counter()
        claimed = ops.claim("bench-p5", ["noop"])
        timings.append(time.perf_counter() - started)
        if not claimed:
            raise RuntimeError("the queue ran dry before the last claim")
        ops.complete(claimed[0].id, claimed[0].attempt)
    return timings


def run() -> dict[str, object]:
    progress("P5: a database with 1,000 finished steps and one with 1,000,000")
    small: list[float] = []
    large: list[float] = []
    with claim_database(1_000) as small_ops, claim_database(1_000_000) as large_ops:
        # Rounds alternate between the two so drift on the machine falls on both alike.
        for n in range(ROUNDS):
            progress(f"P5: claim round {n + 1}/{ROUNDS}")
            small += claim_and_complete(small_ops, CLAIMS_PER_ROUND)
            large += claim_and_complete(large_ops, CLAIMS_PER_ROUND)
    p50_small, p95_small = percentile(small, 0.5), percentile(small, 0.95)
    p50_large, p95_large = percentile(large, 0.5), percentile(large, 0.95)
    return {
        "small_finished_steps": 1_000,
        "large_finished_steps": 1_000_000,
        "small_p50_ms": p50_small * 1000,
        "small_p95_ms": p95_small * 1000,
        "large_p50_ms": p50_large * 1000,
        "large_p95_ms": p95_large * 1000,
        "ratio_p50": p50_large / p50_small,
        "ratio_p95": p95_large / p95_small,
    }
