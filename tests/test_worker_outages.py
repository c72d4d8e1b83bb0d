"""Outages, with real worker processes and a real Postgres restart (a server of the test's own, `pg_ctl -m
fast`): the worker reconnects within seconds of the database returning, across two restarts; nothing that
finished before or during a short outage runs again, with a heartbeat loop running stale recovery
throughout; and no claim is made once a stop is requested, even when the database comes back."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent_ops import Ops, step
from agent_ops.localpg import LocalPostgres
from tests.kit.children import CheckoutProcesses, wait_until
from tests.kit.database import migrate_and_seed, scalar, scratch_server
from tests.kit.recorded import KIND, Tally
from tests.kit.settings import direct_settings
from tests.kit.workload import RecordedWorkers, statuses, wait_drained
from tests.kit.workload import prepare as prepare_recorded
from tests.test_worker import Workers
from tests.test_worker import prepare as prepare_test_kinds

RECONNECT_WITHIN = 5.0  # seconds after the database accepts connections again
QUEUE_ONE = (
    "select public.ops_create_proposal(jsonb_build_object('agent_id', 'brain', 'title', 'after the outage',"
    " 'steps', jsonb_build_array(jsonb_build_object('kind', 'alpha'))))"
)


@pytest.fixture
def server() -> Iterator[LocalPostgres]:
    with scratch_server("outage") as scratch:
        migrate_and_seed(scratch.url("postgres"))
        yield scratch


class Back:
    """Watches a stopped server from outside: the moment it accepts connections again (`at`, the database's
    clock; `wall`, this machine's), running `then(connection)` right away."""

    def __init__(self, url: str, then: Callable[[psycopg.Connection], None] = lambda _conn: None) -> None:
        self.at: datetime | None = None
        self.wall = 0.0
        self._url = url
        self._then = then
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=1) as conn:
                    self.wall = time.time()
                    self.at = conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]
                    self._then(conn)
                    return
            except psycopg.OperationalError:
                time.sleep(0.01)

    def wait(self, timeout: float = 60) -> datetime:
        self._thread.join(timeout)
        assert self.at is not None, "the server never came back"
        return self.at


def outage(server: LocalPostgres, seconds: float, then: Callable[[psycopg.Connection], None] = lambda _c: None) -> Back:
    """Stop the server (fast: every session cut), start it again `seconds` later; returns its watcher."""
    url = server.url("postgres")
    server.stop()
    back = Back(url, then)
    time.sleep(seconds)
    server.start()
    back.wait()
    return back


def json_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll-only"])
def test_a_worker_reconnects_within_5_s_of_the_database_returning(
    server: LocalPostgres, tmp_path: Path, listen: bool
) -> None:
    """Two restarts in a row (3 s down, up for a second, 8 s down): each time, the worker logs 'database
    reachable again' and runs a step queued the moment the database is back within RECONNECT_WITHIN seconds."""
    url = server.url("postgres")
    prepare_test_kinds(url)
    with Workers(url, tmp_path) as workers:
        worker = workers.spawn("worker-back", "--kinds", "alpha", "--log-json", *([] if listen else ["--no-listen"]))
        wait_until(lambda: "worker started" in workers.log("worker-back"), 20, "the worker")
        time.sleep(1.0)
        figures: list[dict[str, float]] = []

        def queue_one(conn: psycopg.Connection) -> None:
            conn.execute(QUEUE_ONE)

        for seconds in (3.0, 8.0):
            back = outage(server, seconds, then=queue_one)
            ran = wait_until(
                lambda: scalar(url, "select count(*) from test_executions") == len(figures) + 1, 30, "a run"
            )
            at = scalar(url, "select max(at) from test_executions")
            first_run = (at - back.wait()).total_seconds()
            reached = [
                datetime.fromisoformat(line["ts"]).timestamp() - back.wall
                for line in json_log(workers.log_path("worker-back"))
                if line["msg"] == "database reachable again"
            ]
            assert reached, "the worker noticed the outage and its end"
            figures.append({"down": seconds, "reachable_again": round(reached[-1], 2), "run": round(first_run, 2)})
            assert 0 <= reached[-1] < RECONNECT_WITHIN, figures
            assert first_run < RECONNECT_WITHIN, figures
            assert ran < 30
            time.sleep(1.0)
        assert worker.poll() is None, "the worker never exited"
        print(f"\nreconnect ({'listen' if listen else 'poll-only'}): {figures}", file=sys.stderr)
        messages = [line["msg"] for line in json_log(workers.log_path("worker-back"))]
        assert messages.count("database unreachable, retrying") == messages.count("database reachable again")


def test_nothing_finished_before_a_short_outage_runs_again(server: LocalPostgres, tmp_path: Path) -> None:
    """Two workers (4 slots each) run 16 steps with leases of 10 s while `agent-ops heartbeat --every 1` runs
    stale recovery; once all eight slots are busy, the database is down for 16 s - longer than a lease. Steps
    that finished during the outage are reported once it is back, steps still running keep their leases, and
    recovery (which gives leases held across a restart one lease length from the restart) requeues none:
    every step runs exactly once, at its first attempt."""
    url = server.url("postgres")
    prepare_recorded(url, lease_seconds=10)
    with Ops(direct_settings(url)) as ops:
        for n in range(16):
            seconds = (3 if n % 2 == 0 else 25) if n < 8 else 1  # the first wave: finishes during / outlives it
            ops.propose("recorded", f"step {n}", [step(KIND, {"seconds": seconds})])
    with tempfile.TemporaryDirectory(prefix="recorded-") as folder:
        record = Path(folder)
        with (
            RecordedWorkers(tmp_path, url, record) as pool,
            CheckoutProcesses(tmp_path, DATABASE_URL=url) as beat,
        ):
            beat.start("heartbeat", [sys.executable, "-m", "agent_ops", "heartbeat", "--every", "1"])
            wait_until(lambda: scalar(url, "select count(*) from ops_action_runs") >= 1, 30, "a heartbeat")
            pool.spawn()
            pool.spawn()
            wait_until(lambda: len(Tally.read(record).executions) == 8, 30, "eight steps running")
            time.sleep(0.5)
            outage(server, 16.0)
            wait_drained(url, timeout=90)
            assert [c.poll() for c in pool.children.values()] == [None, None], "the workers never exited"
        tally = Tally.read(record)
    assert tally.repeated == 0, f"{tally.repeated} steps ran twice"
    assert len(tally.executions) == 16
    assert statuses(url, "ops_mission_steps") == {"succeeded": 16}
    assert scalar(url, "select count(*) from ops_mission_steps where attempt <> 1") == 0, "none retried"
    assert scalar(url, "select count(*) from ops_agent_events where type = 'step:recovered'") == 0


def test_no_claim_is_made_after_a_stop_is_requested_even_when_the_database_comes_back(
    server: LocalPostgres, tmp_path: Path
) -> None:
    """The database goes down under an idle worker, which keeps retrying its claim; two steps become due. The
    moment the database is back, the worker is told to stop: it must exit 0 without claiming them."""
    url = server.url("postgres")
    prepare_test_kinds(url)
    with Ops(direct_settings(url)) as ops:
        for n in range(2):
            ops.propose("brain", f"due during the outage {n}", [step("alpha")])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update ops_mission_steps set run_after = now() + interval '1 minute'")
    stop_at: list[datetime] = []
    with Workers(url, tmp_path) as workers:
        worker = workers.spawn("worker-stop", "--kinds", "alpha")
        wait_until(lambda: "worker started" in workers.log("worker-stop"), 20, "the worker")
        # Due 3 s from now, during the outage: however long the worker took to start on a busy machine.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("update ops_mission_steps set run_after = now() + interval '3 seconds'")
        time.sleep(0.5)

        def stop_now(conn: psycopg.Connection) -> None:
            stop_at.append(conn.execute("select clock_timestamp()").fetchone()[0])  # type: ignore[index]
            worker.send_signal(signal.SIGTERM)

        outage(server, 6.0, then=stop_now)
        assert worker.wait(timeout=20) == 0
    claimed_after = "select count(*) from ops_agent_events where type = 'step:running' and created_at >= %s"
    assert scalar(url, claimed_after, (stop_at[0],)) == 0, "a step was claimed after the stop"
    assert scalar(url, "select count(*) from test_executions") == 0
    assert "worker stopped" in workers.log("worker-stop")
