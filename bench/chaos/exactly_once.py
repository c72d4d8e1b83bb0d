"""R1 — exactly-once: N steps in diamond-shaped missions, 8 worker processes (4 executor threads each)
claiming concurrently → every step executed exactly once (by the executors' own records), none lost, every
mission succeeded."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.chaos.workload import Tally, Workers, check, prepare, queue, statuses, verdict, wait_drained
from bench.common import progress, scratch_database


def run(steps: int, workers: int = 8) -> dict[str, object]:
    with scratch_database("chaos_r1") as url, tempfile.TemporaryDirectory(prefix="chaos-r1-") as folder:
        prepare(url, lease_seconds=120)
        total = queue(url, steps)
        progress(f"R1: {total:,} steps queued; {workers} workers working them")
        with Workers("r1", url, Path(folder)) as pool:
            for _ in range(workers):
                pool.spawn()
            started = time.monotonic()
            wait_drained(url, timeout=60 + total / 50)
            elapsed = time.monotonic() - started
        tally = Tally.read(Path(folder))
        steps_by_status, missions_by_status = statuses(url, "ops_mission_steps"), statuses(url, "ops_missions")
    doubles = tally.repeated
    lost = total - len(tally.executions)
    failures: list[str] = []
    check(failures, doubles == 0, f"{doubles} steps executed more than once")
    check(failures, lost == 0, f"{lost} steps never executed")
    check(failures, steps_by_status == {"succeeded": total}, f"step statuses {steps_by_status}")
    check(failures, missions_by_status == {"succeeded": total // 5}, f"mission statuses {missions_by_status}")
    figures: dict[str, object] = {
        "steps": total,
        "workers": workers,
        "executions": sum(tally.executions.values()),
        "double_executions": doubles,
        "lost": lost,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(total / elapsed),
    }
    verdict("R1", failures)
    return figures
