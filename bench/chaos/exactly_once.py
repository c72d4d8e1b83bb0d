"""R1 — exactly-once: N steps in diamond-shaped missions, 8 worker processes (4 executor threads each)
claiming concurrently → every step executed exactly once (by the executors' own records), none lost, every
mission succeeded (docs/architecture.md, invariant 2; the scenario is tests/kit/workload.py's exactly_once)."""

from __future__ import annotations

from bench.chaos import verdict
from bench.common import LOGS, progress
from tests.kit.database import migrate_and_seed, scratch_database
from tests.kit.workload import exactly_once


def run(steps: int, workers: int = 8) -> dict[str, object]:
    with scratch_database("chaos_r1") as url:
        migrate_and_seed(url)
        progress(f"R1: about {steps:,} steps; {workers} workers working them")
        drained = exactly_once(url, steps, workers, LOGS / "r1")
    figures: dict[str, object] = {
        "steps": drained.steps,
        "workers": workers,
        "executions": sum(drained.tally.executions.values()),
        "double_executions": drained.tally.repeated,
        "lost": drained.lost,
        "seconds": round(drained.seconds, 1),
        "steps_per_s": round(drained.steps / drained.seconds),
    }
    verdict("R1", drained.problems())
    return figures
