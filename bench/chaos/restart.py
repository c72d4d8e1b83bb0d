"""R3 — a Postgres restart mid-run: 4 workers on a server of their own; when a third of the steps are done
the server is stopped with `pg_ctl -m fast` (every session cut, answers in flight lost) and started again on
the same port. Workers must reconnect by themselves; every step must succeed, none lost, none run twice
(the scenario is tests/kit/workload.py's restart_mid_run)."""

from __future__ import annotations

from bench.chaos import verdict
from bench.common import LOGS, progress
from tests.kit.database import migrate_and_seed, scratch_server
from tests.kit.workload import restart_mid_run


def run(steps: int, workers: int = 4) -> dict[str, object]:
    progress("R3: starting a Postgres server of its own")
    with scratch_server("chaos-r3") as server:
        migrate_and_seed(server.url("postgres"))
        restarted = restart_mid_run(server, steps, workers, LOGS / "r3", progress=lambda text: progress(f"R3: {text}"))
    figures: dict[str, object] = {
        "steps": restarted.steps,
        "done_before_restart": restarted.done_before,
        "restart_seconds": round(restarted.outage_seconds, 1),
        "lost": restarted.lost,
        "double_executions": restarted.tally.repeated,
    }
    verdict("R3", restarted.problems())
    return figures
