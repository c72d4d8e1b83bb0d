"""Unattended operation, with real worker processes: run-time limits (deadlines, hung executors, the exit for a
restart) and presence (heartbeat, stopping, sign-off)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import agent_ops
from agent_ops import Ops, step
from agent_ops.models import SignOff
from tests.kit.children import wait_until
from tests.kit.database import scalar
from tests.kit.settings import direct_settings, rest_settings
from tests.kit.trickle import Trickle
from tests.postgrest_standin import StandIn
from tests.test_worker import Workers, prepare
from vps_worker.runs import CANCEL_GRACE
from vps_worker.worker import EXIT_ABANDONED

STARTED = "select count(*) from test_executions where kind = %s and event in ('started', 'ran')"


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    prepare(db_url)
    with Workers(db_url, tmp_path) as running:
        yield running
        running.stop(sig=signal.SIGKILL, timeout=15)  # hung executors: no graceful stop to wait for


@pytest.fixture
def ops(db_url: str) -> Iterator[Ops]:
    with Ops(direct_settings(db_url)) as client:
        yield client


def worker_policy(ops: Ops, **kinds: dict[str, Any]) -> None:
    """One attempt per step, leases of 30 s (unless a kind says otherwise), per-kind settings from `kinds`."""
    policy: dict[str, Any] = {"lease_seconds": 30, "max_attempts": 1, "backoff_base_seconds": 0, "kinds": kinds}
    ops.set_policy("worker_policy", policy, "test")


def started(conn: psycopg.Connection, kind: str) -> int:
    return int(scalar(conn, STARTED, (kind,)))


def test_a_hung_executor_times_out_at_its_deadline_and_its_slot_frees_at_once(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    """An executor that ignores ctx.cancelled, with timeout_seconds 2: at its deadline the worker fails the
    attempt as retryable 'timed out after 2 s' (the worker, not stale recovery: no heartbeat runs here) and
    frees the slot, so a concurrency-1 worker runs the next step while the hung thread still runs."""
    worker_policy(ops, hung={"timeout_seconds": 2})
    hung = ops.propose("brain", "hangs", [step("hung")]).mission_id
    ops.propose("brain", "waits for the slot", [step("alpha")])
    workers.spawn("worker-limits", "--concurrency", "1", "--kinds", "hung,alpha")
    wait_until(lambda: started(conn, "hung") == 1, 20, "the hung step to start")
    began = time.monotonic()
    took = wait_until(lambda: started(conn, "alpha") == 1, 10, "the next step to get the slot")
    assert took < 3.5, f"the slot freed {took:.1f}s after the hung step started (deadline 2 s)"
    failed = conn.execute(
        "select status, attempt, last_error from ops_mission_steps where mission_id = %s", (hung,)
    ).fetchone()
    assert failed == ("failed", 1, "timed out after 2 s")
    assert ops.events(type="step:recovered") == [], "the worker reported the timeout itself"
    assert scalar(conn, "select count(*) from test_executions where kind = 'hung' and event = 'finished'") == 0
    assert time.monotonic() - began < 10
    log = workers.log("worker-limits")
    assert "run abandoned" in log
    assert "reason=timed out" in log
    assert workers.children["worker-limits"].poll() is None, "one hung executor is within the limit"


def test_a_cancelled_mission_frees_the_slot_of_an_executor_that_ignores_it(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    """Its lease lost (the mission was cancelled), a run is cancelled; an executor that ignores that keeps its
    thread but not its slot: CANCEL_GRACE seconds later the next step runs."""
    worker_policy(ops, hung={"lease_seconds": 3})
    hung = ops.propose("brain", "hangs", [step("hung")]).mission_id
    workers.spawn("worker-cancel", "--concurrency", "1", "--kinds", "hung,alpha")
    wait_until(lambda: started(conn, "hung") == 1, 20, "the hung step to start")
    ops.cancel(int(hung or 0), "no longer needed")
    ops.propose("brain", "waits for the slot", [step("alpha")])
    took = wait_until(lambda: started(conn, "alpha") == 1, 15, "the next step to get the slot")
    # The lease is extended every second (a third of 3 s): the loss is found within about a second.
    assert took < 1 + CANCEL_GRACE + 2, f"{took:.1f}s"
    log = workers.log("worker-cancel")
    assert "lease lost" in log
    assert "reason=lease lost" in log
    assert scalar(conn, "select count(*) from test_executions where kind = 'hung' and event = 'finished'") == 0


def test_too_many_hung_executors_make_the_worker_drain_sign_off_and_exit_75(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    """More abandoned runs still running than --max-abandoned: no more claims, the running step is handed back
    after the grace period, the worker signs off and exits 75 (EX_TEMPFAIL) for its supervisor to restart."""
    worker_policy(ops, hung={"timeout_seconds": 1})
    for n in range(2):
        ops.propose("brain", f"hangs {n}", [step("hung")])
    slow = ops.propose("brain", "still running at the end", [step("slow", {"seconds": 60})]).mission_id
    worker = workers.spawn(
        "worker-75", "--concurrency", "2", "--max-abandoned", "1", "--grace-seconds", "1", "--kinds", "hung,slow"
    )
    assert worker.wait(timeout=30) == EXIT_ABANDONED
    log = workers.log("worker-75")
    assert "too many hung executors" in log
    assert "hung=2 max_abandoned=1 exit_code=75" in log
    timed_out = "select count(*) from ops_mission_steps where kind = 'hung' and last_error = 'timed out after 1 s'"
    assert scalar(conn, timed_out) == 2
    handed_back = conn.execute(
        "select status, attempt, last_error from ops_mission_steps where mission_id = %s", (slow,)
    ).fetchone()
    assert handed_back == ("queued", 1, "worker shutdown"), "the running step was handed back"
    assert [w.worker_id for w in ops.workers()] == [], "signed off"
    assert [e.payload["worker_id"] for e in ops.events(type="worker:left")] == ["worker-75"]


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_an_http_step_against_a_trickling_server_fails_at_its_timeout_not_minutes_later(
    workers: Workers, ops: Ops, conn: psycopg.Connection, path: str
) -> None:
    """The built-in http executor in a worker process: a server answering a byte a second, "timeout": 3."""
    worker_policy(ops)
    with Trickle(interval=1.0) as server:
        ops.propose("brain", "slow webhook", [step("http", {"url": f"{server.url}{path}", "timeout": 3})])
        workers.spawn("worker-http", "--kinds", "http", env={"WORKER_HTTP_ALLOWED_HOSTS": "127.0.0.1"})
        wait_until(lambda: scalar(conn, "select status from ops_mission_steps") == "failed", 20, "the step to fail")
    error, seconds = conn.execute(
        "select last_error, extract(epoch from finished_at - started_at) from ops_mission_steps"
    ).fetchone() or (None, None)
    assert error == "GET 127.0.0.1: timed out after 3s"
    assert 2.9 < float(seconds) < 4.5, f"{seconds}s"


def test_a_worker_announces_itself_stays_seen_while_idle_and_signs_off(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    """Presence: at start the worker's host, kinds, concurrency and version; beats while idle (a quarter of
    workers.presence_seconds); `stopping` while it drains; gone with 'worker:left' once it exits. A worker that
    dies without signing off is forgotten by the heartbeat with 'worker:lost'."""
    ops.set_policy("workers", {"presence_seconds": 5}, "test")
    worker = workers.spawn(
        "worker-present", "--kinds", "alpha,slow", "--concurrency", "3", "--grace-seconds", "5",
        "--poll-min", "60", "--poll-max", "60",
    )  # fmt: skip
    wait_until(lambda: [w.worker_id for w in ops.workers()] == ["worker-present"], 20, "the worker to announce itself")
    seen = ops.workers()[0]
    assert (seen.kinds, seen.concurrency, seen.version, seen.live, seen.stopping) == (
        ["alpha", "slow"],
        3,
        agent_ops.__version__,
        True,
        False,
    )
    assert seen.host
    assert [e.payload["worker_id"] for e in ops.events(type="worker:joined")] == ["worker-present"]
    time.sleep(3.5)  # idle: no claim for a minute, so only the presence beat can refresh it
    assert ops.workers()[0].last_seen_at > seen.last_seen_at, "seen again while idle"
    ops.propose("brain", "runs through the stop", [step("slow", {"seconds": 30})])
    wait_until(lambda: started(conn, "slow") == 1, 20, "the step to start")
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: ops.workers()[0].stopping, 5, "stopping to show")
    assert [r["kind"] for r in ops.workers()[0].running] == ["slow"], "draining: still running its step"
    assert worker.wait(timeout=20) == 0
    assert ops.workers() == []
    assert [e.payload["worker_id"] for e in ops.events(type="worker:left")] == ["worker-present"]

    lost = workers.spawn("worker-killed", "--kinds", "alpha")
    wait_until(lambda: [w.worker_id for w in ops.workers()] == ["worker-killed"], 20, "the second worker")
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=10)
    time.sleep(5.5)
    ops.heartbeat()
    assert ops.workers() == []
    assert [e.payload["worker_id"] for e in ops.events(type="worker:lost")] == ["worker-killed"]


def test_presence_calls_and_listen_support_over_both_transports(
    transport_name: str, db_url: str, standin: StandIn
) -> None:
    """Ops.worker_heartbeat and Ops.sign_off over the direct transport and PostgREST; only the direct one
    declares LISTEN support (the worker polls otherwise)."""
    settings = direct_settings(db_url) if transport_name == "direct" else rest_settings(standin)
    with Ops(settings) as client:
        assert client.transport.supports_listen is (transport_name == "direct")
        seen = client.worker_heartbeat("w-1", host="vps-1", kinds=["crawl"], concurrency=2, version="0.2.0")
        assert (seen.worker_id, seen.host, seen.kinds, seen.concurrency, seen.version) == (
            "w-1",
            "vps-1",
            ["crawl"],
            2,
            "0.2.0",
        )
        assert (seen.live, seen.stopping, seen.running) == (True, False, [])
        stopping = client.worker_heartbeat("w-1", stopping=True, retry=False)
        assert (stopping.stopping, stopping.kinds, stopping.host) == (True, ["crawl"], "vps-1"), "the rest is kept"
        assert client.sign_off("w-1") == SignOff(worker_id="w-1", signed_off=True)
        assert client.sign_off("w-1", retry=False) == SignOff(worker_id="w-1", signed_off=False)
        assert client.workers() == []
