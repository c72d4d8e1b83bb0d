"""R2 — crashes: the same queue drained twice by 8 workers, once calmly and once while a random worker is
SIGKILLed every 1-3 s and a replacement started. Steps held by a killed worker come back through lease
expiry (3 s) and the heartbeat's stale recovery, so a step may run again (at-least-once under crashes).
Every step must end terminal and every mission finalized; the figure is the chaos throughput as a
fraction of the calm one (steps per second from the first completion to the last)."""

from __future__ import annotations

import random
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos import ChaosFailure
from bench.chaos.workload import (
    UNFINISHED,
    Tally,
    Workers,
    check,
    heartbeat,
    prepare,
    queue,
    statuses,
    verdict,
)
from bench.common import progress, scalar, scratch_database, wait_until

SUCCEEDED = "select count(*) from public.ops_mission_steps where status = 'succeeded'"


@dataclass
class Drained:
    steps: int
    steps_per_s: float
    kills: int
    repeated: int
    never_ran: int
    steps_by_status: dict[str, int]
    missions_by_status: dict[str, int]


def drain(steps: int, workers: int, chaos: bool) -> Drained:
    label = "chaos" if chaos else "calm"
    with scratch_database(f"chaos_r2_{label}") as url, tempfile.TemporaryDirectory(prefix="chaos-r2-") as folder:
        prepare(url, lease_seconds=3)
        total = queue(url, steps, seconds=0.02)
        kills = 0
        with Workers(f"r2-{label}", url, Path(folder)) as pool, heartbeat(url):
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
        tally = Tally.read(Path(folder))
        return Drained(
            steps=total,
            steps_per_s=(total - done_before) / elapsed,
            kills=kills,
            repeated=tally.repeated,
            never_ran=total - len(tally.executions),
            steps_by_status=statuses(url, "ops_mission_steps"),
            missions_by_status=statuses(url, "ops_missions"),
        )


def run(steps: int, workers: int = 8) -> dict[str, object]:
    progress(f"R2: calm run, {steps:,} steps, {workers} workers")
    calm = drain(steps, workers, chaos=False)
    progress("R2: the same with a random worker SIGKILLed every 1-3 s and replaced")
    wild = drain(steps, workers, chaos=True)
    failures: list[str] = []
    terminal = {"succeeded", "failed", "cancelled"}
    for label, result in (("calm", calm), ("chaos", wild)):
        check(
            failures, set(result.steps_by_status) <= terminal, f"{label}: steps not terminal: {result.steps_by_status}"
        )
        check(
            failures,
            set(result.missions_by_status) <= terminal,
            f"{label}: missions not finalized: {result.missions_by_status}",
        )
        # A step that never ran is only acceptable as a cancelled one (its mission failed first).
        check(
            failures,
            result.never_ran <= result.steps_by_status.get("cancelled", 0),
            f"{label}: {result.never_ran} steps never ran",
        )
    check(failures, calm.steps_by_status == {"succeeded": calm.steps}, f"calm: {calm.steps_by_status}")
    check(failures, calm.repeated == 0, f"calm: {calm.repeated} steps ran twice without any crash")
    check(failures, wild.kills > 0, "no worker was killed")
    figures = {
        "steps": calm.steps,
        "calm_steps_per_s": round(calm.steps_per_s),
        "chaos_steps_per_s": round(wild.steps_per_s),
        "fraction": round(wild.steps_per_s / calm.steps_per_s, 2),
        "kills": wild.kills,
        "rerun_after_kill": wild.repeated,
        "chaos_steps_by_status": wild.steps_by_status,
    }
    verdict("R2", failures)
    return figures
