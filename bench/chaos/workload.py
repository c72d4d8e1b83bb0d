"""What R1-R3 share: a database of diamond-shaped missions, `vps-worker` processes running the `chaos`
executor, a heartbeat for stale recovery, and the tally of executions from the executors' own records."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.chaos import ChaosFailure
from bench.common import Processes, agent_ops_database, scalar, worker_argv

# Five steps: one, then two in parallel, then a join, then a last one. Exercises dependency promotion
# (including a step waiting on two) and finalization on every mission.
DIAMOND = """[
  {"kind": "chaos", "payload": {"seconds": %(seconds)s}},
  {"kind": "chaos", "payload": {"seconds": %(seconds)s}, "depends_on": [0]},
  {"kind": "chaos", "payload": {"seconds": %(seconds)s}, "depends_on": [0]},
  {"kind": "chaos", "payload": {"seconds": %(seconds)s}, "depends_on": [1, 2]},
  {"kind": "chaos", "payload": {"seconds": %(seconds)s}, "depends_on": [3]}
]"""
STEPS_PER_MISSION = 5

UNFINISHED = "select count(*) from public.ops_mission_steps where status in ('pending', 'queued', 'running')"


def prepare(url: str, lease_seconds: int) -> None:
    agent_ops_database(
        url,
        policy={
            "auto_approve": {"enabled": True, "allowed_step_kinds": ["chaos"]},
            "worker_policy": {
                "lease_seconds": lease_seconds,
                "max_attempts": 5,
                "backoff_base_seconds": 0,
                "backoff_max_seconds": 1,
            },
        },
        drop_keys=("daily_proposal_limit", "max_active_missions"),
    )


def queue(url: str, steps: int, seconds: float = 0.0) -> int:
    """Queue missions through ops_create_proposal for about `steps` steps; returns the exact step count."""
    missions = max(1, steps // STEPS_PER_MISSION)
    with psycopg.connect(url, autocommit=True) as conn, psycopg.ClientCursor(conn) as cursor:
        cursor.execute(
            "select public.ops_create_proposal(jsonb_build_object('agent_id', 'chaos', 'title', 'chaos ' || g,"
            " 'steps', %(steps)s::jsonb)) from generate_series(1, %(missions)s) g",
            {"steps": DIAMOND % {"seconds": seconds}, "missions": missions},
        )
        conn.execute(b"vacuum analyze")
    return missions * STEPS_PER_MISSION


@dataclass
class Tally:
    """What the executors' records say happened."""

    executions: Counter[int]

    @classmethod
    def read(cls, folder: Path) -> Tally:
        counts: Counter[int] = Counter()
        for path in folder.glob("*.log"):
            for line in path.read_text().splitlines():
                counts[int(line.split()[0])] += 1
        return cls(counts)

    @property
    def repeated(self) -> int:
        """Steps that ran more than once."""
        return sum(1 for n in self.executions.values() if n > 1)


class Workers(Processes):
    """`vps-worker` processes running the chaos executor, recording into one folder."""

    def __init__(self, name: str, url: str, record: Path, concurrency: int = 4) -> None:
        super().__init__(name)
        self.url, self.record, self.concurrency = url, record, concurrency
        self.started = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        argv = worker_argv(
            "--kinds",
            "chaos",
            "--executors",
            "bench.chaos.executor",
            "--concurrency",
            str(self.concurrency),
            "--poll-min",
            "0.05",
            "--poll-max",
            "0.5",
            "--worker-id",
            f"{self.name}-{self.started}",
        )
        return self.start(argv, env={"DATABASE_URL": self.url, "CHAOS_DIR": str(self.record)}, tag=f"-{self.started}")

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [child for child in self.children if child.poll() is None]


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

    thread = threading.Thread(target=beat, name="chaos-heartbeat", daemon=True)
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
    raise ChaosFailure(f"{scalar(url, UNFINISHED)} steps still unfinished after {timeout:.0f}s")


def statuses(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        query = f"select status, count(*) from public.{table} group by status"  # noqa: S608 - our own table names
        rows = conn.execute(query.encode()).fetchall()
    return {status: int(count) for status, count in rows}


def check(failures: list[str], condition: bool, message: str) -> None:
    if not condition:
        failures.append(message)


def verdict(name: str, failures: Sequence[str]) -> None:
    if failures:
        raise ChaosFailure(f"{name}: " + "; ".join(failures))
