"""Seeded scenarios with real worker processes: diamond-shaped missions of `recorded` steps, worked by
`vps-worker` processes until none is left, and judged by the executors' own records (tests/kit/recorded.py).

`exactly_once` (docs/architecture.md, invariant 2) and `restart_mid_run` (invariant 2 across a Postgres
restart, pitfall P4) run at a small size in tests/test_worker.py and at large sizes as the chaos suite's R1
and R3; R2 (bench/chaos/crashes.py) is built from the same parts.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from agent_ops.localpg import LocalPostgres
from tests.kit.children import CheckoutProcesses, wait_until
from tests.kit.database import QUOTA_KEYS, scalar, set_policies
from tests.kit.recorded import KIND, Tally

# Five steps: one, then two in parallel, then a join, then a last one. Exercises dependency promotion
# (including a step waiting on two) and finalization on every mission.
DIAMOND = """[
  {"kind": "recorded", "payload": {"seconds": %(seconds)s}},
  {"kind": "recorded", "payload": {"seconds": %(seconds)s}, "depends_on": [0]},
  {"kind": "recorded", "payload": {"seconds": %(seconds)s}, "depends_on": [0]},
  {"kind": "recorded", "payload": {"seconds": %(seconds)s}, "depends_on": [1, 2]},
  {"kind": "recorded", "payload": {"seconds": %(seconds)s}, "depends_on": [3]}
]"""
STEPS_PER_MISSION = 5

UNFINISHED = "select count(*) from public.ops_mission_steps where status in ('pending', 'queued', 'running')"
SUCCEEDED = "select count(*) from public.ops_mission_steps where status = 'succeeded'"


def prepare(url: str, lease_seconds: int) -> None:
    """`recorded` steps auto-approved, no quota in the way, leases of `lease_seconds`, retries at once."""
    set_policies(
        url,
        {
            "auto_approve": {"enabled": True, "allowed_step_kinds": [KIND]},
            "worker_policy": {
                "lease_seconds": lease_seconds,
                "max_attempts": 5,
                "backoff_base_seconds": 0,
                "backoff_max_seconds": 1,
            },
        },
        drop_keys=QUOTA_KEYS,
    )


def queue(url: str, steps: int, seconds: float = 0.0) -> int:
    """Queue missions through ops_create_proposal for about `steps` steps; returns the exact step count."""
    missions = max(1, steps // STEPS_PER_MISSION)
    with psycopg.connect(url, autocommit=True) as conn, psycopg.ClientCursor(conn) as cursor:
        cursor.execute(
            "select public.ops_create_proposal(jsonb_build_object('agent_id', 'recorded', 'title', 'diamond ' || g,"
            " 'steps', %(steps)s::jsonb)) from generate_series(1, %(missions)s) g",
            {"steps": DIAMOND % {"seconds": seconds}, "missions": missions},
        )
        conn.execute(b"vacuum analyze")
    return missions * STEPS_PER_MISSION


class RecordedWorkers(CheckoutProcesses):
    """`vps-worker` processes running the `recorded` executor, all recording into `record`."""

    def __init__(self, logs: Path, url: str, record: Path, concurrency: int = 4) -> None:
        super().__init__(logs, DATABASE_URL=url, RECORD_DIR=str(record))
        self.concurrency = concurrency
        self.started = 0

    def spawn(self) -> None:
        """One more worker (4 executor threads by default), polling often."""
        self.started += 1
        name = f"worker-{self.started}"
        self.start_worker(
            name,
            "--kinds",
            KIND,
            "--executors",
            "tests.kit.recorded",
            "--concurrency",
            str(self.concurrency),
            "--poll-min",
            "0.05",
            "--poll-max",
            "0.5",
            "--worker-id",
            name,
        )


@contextmanager
def heartbeat(url: str, every: float = 1.0) -> Iterator[None]:
    """`ops_heartbeat()` every `every` seconds in the background (stale recovery of killed workers' steps);
    connection errors (a restarting server) are waited out."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(b"select public.ops_heartbeat()")
            except psycopg.OperationalError:
                continue

    thread = threading.Thread(target=beat, name="kit-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def wait_drained(url: str, timeout: float) -> float:
    """Seconds until no step is pending, queued or running; tolerates a restarting server."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if scalar(url, UNFINISHED) == 0:
                return time.monotonic() - started
        except psycopg.OperationalError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{scalar(url, UNFINISHED)} steps still unfinished after {timeout:.0f}s")


def statuses(url: str, table: str) -> dict[str, int]:
    """Rows of an ops table by status."""
    query = f"select status, count(*) from public.{table} group by status"  # noqa: S608 - our own table names
    with psycopg.connect(url, autocommit=True) as conn:
        return {status: int(count) for status, count in conn.execute(query).fetchall()}


@dataclass
class Drained:
    """A queue of `steps` diamond steps worked until none was left."""

    steps: int
    seconds: float
    tally: Tally
    steps_by_status: dict[str, int]
    missions_by_status: dict[str, int]

    @property
    def lost(self) -> int:
        """Steps no executor ever ran."""
        return self.steps - len(self.tally.executions)

    def problems(self) -> list[str]:
        """How the run broke exactly-once: a step run twice or never, a step or mission not succeeded."""
        found = []
        if self.tally.repeated:
            found.append(f"{self.tally.repeated} steps executed more than once")
        if self.lost:
            found.append(f"{self.lost} steps never executed")
        if self.steps_by_status != {"succeeded": self.steps}:
            found.append(f"step statuses {self.steps_by_status}")
        if self.missions_by_status != {"succeeded": self.steps // STEPS_PER_MISSION}:
            found.append(f"mission statuses {self.missions_by_status}")
        return found


def drained(url: str, steps: int, seconds: float, record: Path) -> Drained:
    return Drained(
        steps, seconds, Tally.read(record), statuses(url, "ops_mission_steps"), statuses(url, "ops_missions")
    )


def exactly_once(url: str, steps: int, workers: int, logs: Path) -> Drained:
    """About `steps` steps in diamond missions, `workers` worker processes (4 executor threads each) claiming
    them at once; every step must run exactly once and every mission succeed. `url`: a migrated database."""
    prepare(url, lease_seconds=120)
    total = queue(url, steps)
    with tempfile.TemporaryDirectory(prefix="recorded-") as folder:
        with RecordedWorkers(logs, url, Path(folder)) as pool:
            for _ in range(workers):
                pool.spawn()
            seconds = wait_drained(url, timeout=60 + total / 50)
        return drained(url, total, seconds, Path(folder))


@dataclass
class Restarted(Drained):
    """A queue drained across a Postgres restart."""

    done_before: int
    outage_seconds: float
    crashed: list[int]

    def problems(self) -> list[str]:
        found = Drained.problems(self)
        if self.crashed:
            found.append(f"workers exited during the restart: {self.crashed}")
        return found


def restart_mid_run(
    server: LocalPostgres, steps: int, workers: int, logs: Path, progress: Callable[[str], None] = lambda _: None
) -> Restarted:
    """`workers` worker processes on `server` (its `postgres` database migrated); when a third of about `steps`
    steps are done, the server is stopped with `pg_ctl -m fast` (every session cut, answers in flight lost)
    and started again on the same port. The workers must reconnect by themselves, every step must succeed,
    none lost, none run twice: leases of 10 s outlast the outage, so completions delivered late still count."""
    url = server.url("postgres")
    prepare(url, lease_seconds=10)
    total = queue(url, steps, seconds=0.01)
    with tempfile.TemporaryDirectory(prefix="recorded-") as folder:
        with RecordedWorkers(logs, url, Path(folder)) as pool, heartbeat(url):
            for _ in range(workers):
                pool.spawn()
            wait_until(lambda: scalar(url, SUCCEEDED) >= total // 3, 120, "a third of the steps")
            done_before = int(scalar(url, SUCCEEDED))
            progress(f"{done_before:,}/{total:,} steps done; restarting Postgres (fast shutdown)")
            outage = time.monotonic()
            server.restart()
            outage = time.monotonic() - outage
            seconds = wait_drained(url, timeout=120 + total / 20)
            crashed = [child.pid for child in pool.children.values() if child.poll() is not None]
        run = drained(url, total, seconds, Path(folder))
    return Restarted(**vars(run), done_before=done_before, outage_seconds=outage, crashed=crashed)
