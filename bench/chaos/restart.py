"""R3 — a Postgres restart mid-run: 4 workers on a server of their own; when a third of the steps are done
the server is stopped with `pg_ctl -m fast` (every session cut, answers in flight lost) and started again on
the same port. Workers must reconnect by themselves; every step must succeed, none lost, none run twice
(leases of 10 s outlast the outage, so completions delivered late still count)."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

from agent_ops.localpg import LocalPostgres
from bench.chaos.workload import Tally, Workers, check, heartbeat, prepare, queue, statuses, verdict, wait_drained
from bench.common import ROOT, progress, scalar, wait_until

SUCCEEDED = "select count(*) from public.ops_mission_steps where status = 'succeeded'"


def run(steps: int, workers: int = 4) -> dict[str, object]:
    home = ROOT / ".agent-ops" / "scratch" / f"chaos-r3-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    server = LocalPostgres(home)
    try:
        progress("R3: starting a Postgres server of its own")
        server.start()
        url = server.url("postgres")
        prepare(url, lease_seconds=10)
        total = queue(url, steps, seconds=0.01)
        with tempfile.TemporaryDirectory(prefix="chaos-r3-") as folder:
            with Workers("r3", url, Path(folder)) as pool, heartbeat(url):
                for _ in range(workers):
                    pool.spawn()
                wait_until(lambda: scalar(url, SUCCEEDED) >= total // 3, 120, "a third of the steps")
                done_before = int(scalar(url, SUCCEEDED))
                progress(f"R3: {done_before:,}/{total:,} steps done; restarting Postgres (fast shutdown)")
                outage = time.monotonic()
                server.restart()
                outage = time.monotonic() - outage
                wait_drained(url, timeout=120 + total / 20)
                crashed = [child.pid for child in pool.children if child.poll() is not None]
            tally = Tally.read(Path(folder))
        steps_by_status = statuses(url, "ops_mission_steps")
    finally:
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)
    lost = total - len(tally.executions)
    failures: list[str] = []
    check(failures, steps_by_status == {"succeeded": total}, f"step statuses {steps_by_status}")
    check(failures, lost == 0, f"{lost} steps never executed")
    check(failures, tally.repeated == 0, f"{tally.repeated} steps executed more than once")
    check(failures, not crashed, f"workers exited during the restart: {crashed}")
    figures: dict[str, object] = {
        "steps": total,
        "done_before_restart": done_before,
        "restart_seconds": round(outage, 1),
        "lost": lost,
        "double_executions": tally.repeated,
    }
    verdict("R3", failures)
    return figures
