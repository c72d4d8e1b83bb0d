"""R2 — crashes: the same queue drained twice by 8 workers, once calmly and once while a random worker is
SIGKILLed every 1-3 s and a replacement started. Steps held by a killed worker come back through lease
expiry (3 s) and the heartbeat's stale recovery, so a step may run again (at-least-once under crashes,
docs/architecture.md pitfall P4). Every step must end terminal and every mission finalized; the figure is the
chaos throughput as a fraction of the calm one (steps per second from the first completion to the last).
Built from the test kit's workload (tests/kit/workload.py)."""

from __future__ import annotations

import random
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent_ops.models import FINISHED_STATUSES
from bench.chaos import ChaosFailure, verdict
from bench.common import LOGS, progress
from tests.kit.children import wait_until
from tests.kit.database import migrate_and_seed, scalar, scratch_database
from tests.kit.workload import SUCCEEDED, UNFINISHED, Drained, RecordedWorkers, drained, heartbeat, prepare, queue


@dataclass
class Crashed:
    run: Drained
    steps_per_s: float
    kills: int


def drain(steps: int, workers: int, chaos: bool) -> Crashed:
    label = "chaos" if chaos else "calm"
    with scratch_database(f"chaos_r2_{label}") as url, tempfile.TemporaryDirectory(prefix="chaos-r2-") as folder:
        migrate_and_seed(url)
        prepare(url, lease_seconds=3)
        total = queue(url, steps, seconds=0.02)
        kills = 0
        with RecordedWorkers(LOGS / f"r2-{label}", url, Path(folder)) as pool, heartbeat(url):
            for _ in range(workers):
                pool.spawn()
            wait_until(lambda: scalar(url, SUCCEEDED) > 0, 60, "a first completion")
            started, done_before = time.monotonic(), int(scalar(url, SUCCEEDED))
            deadline = started + 120 + total / 20
            next_kill = started + random.uniform(1, 3)
            while scalar(url, UNFINISHED):
                now = time.monotonic()
                if now > deadline:
                    raise ChaosFailure(f"R2 {label}: {scalar(url, UNFINISHED)} steps unfinished at the deadline")
                if chaos and now >= next_kill and pool.alive():
                    random.choice(pool.alive()).send_signal(signal.SIGKILL)
                    pool.spawn()
                    kills += 1
                    next_kill = now + random.uniform(1, 3)
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        return Crashed(drained(url, total, elapsed, Path(folder)), (total - done_before) / elapsed, kills)


def run(steps: int, workers: int = 8) -> dict[str, object]:
    progress(f"R2: calm run, {steps:,} steps, {workers} workers")
    calm = drain(steps, workers, chaos=False)
    progress("R2: the same with a random worker SIGKILLed every 1-3 s and replaced")
    wild = drain(steps, workers, chaos=True)
    failures: list[str] = []
    for label, result in (("calm", calm.run), ("chaos", wild.run)):
        if not set(result.steps_by_status) <= set(FINISHED_STATUSES):
            failures.append(f"{label}: steps not terminal: {result.steps_by_status}")
        if not set(result.missions_by_status) <= set(FINISHED_STATUSES):
            failures.append(f"{label}: missions not finalized: {result.missions_by_status}")
        # A step that never ran is only acceptable as a cancelled one (its mission failed first).
        if result.lost > result.steps_by_status.get("cancelled", 0):
            failures.append(f"{label}: {result.lost} steps never ran")
    # Without a crash, exactly once.
    failures += [f"calm: {problem}" for problem in calm.run.problems()]
    if not wild.kills:
        failures.append("no worker was killed")
    figures = {
        "steps": calm.run.steps,
        "calm_steps_per_s": round(calm.steps_per_s),
        "chaos_steps_per_s": round(wild.steps_per_s),
        "fraction": round(wild.steps_per_s / calm.steps_per_s, 2),
        "kills": wild.kills,
        "rerun_after_kill": wild.run.tally.repeated,
        "chaos_steps_by_status": wild.run.steps_by_status,
    }
    verdict("R2", failures)
    return figures
