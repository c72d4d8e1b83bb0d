"""Reports that ride with the next claim (vps_worker/reports.py): one round trip per step, the same outcomes.

In-process workers on a real database; the worker's Ops is wrapped only to count which RPCs it sends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from agent_ops import Ops, step
from agent_ops.models import StepResult
from tests.kit.children import wait_until
from tests.kit.database import scalar
from tests.kit.settings import direct_settings
from tests.test_worker import prepare
from vps_worker import reports
from vps_worker.config import WorkerSettings
from vps_worker.executors import Executor, StepContext
from vps_worker.worker import Worker


@contextmanager
def counted_worker(
    db_url: str, executors: Mapping[str, Executor], carried: list[int] | None = None, **settings: Any
) -> Iterator[tuple[Worker, Counter[str]]]:
    """A running in-process worker and the RPCs it has sent so far, by name; `carried` gets the number of
    reports of each batch call that had any."""
    calls: Counter[str] = Counter()
    with Ops(direct_settings(db_url, pool_size=4)) as worker_ops:
        send = worker_ops.call

        def counting(function: str, params: Mapping[str, Any] | None = None, *, retry: bool = False) -> Any:
            calls[function] += 1
            if carried is not None and function == "ops_report_and_claim" and params and params.get("reports"):
                carried.append(len(params["reports"]))
            return send(function, params, retry=retry)

        worker_ops.call = counting  # type: ignore[method-assign]
        options: dict[str, Any] = {"worker_id": "worker-reports", "poll_min": 0.1, "poll_max": 0.3, "listen": False}
        worker = Worker(worker_ops, WorkerSettings(**{**options, **settings}), executors)
        running = threading.Thread(target=worker.run, daemon=True)
        running.start()
        try:
            yield worker, calls
        finally:
            worker.request_stop()
            running.join(15)
    assert not running.is_alive()


def finished(conn: psycopg.Connection, missions: int) -> Callable[[], bool]:
    return lambda: scalar(conn, "select count(*) from ops_missions where finalized_at is not null") == missions


def quick(ctx: StepContext) -> dict[str, Any]:
    time.sleep(0.01)
    return {"position": ctx.step_id}


def test_results_ride_with_the_next_claim_one_round_trip_per_step(db_url: str, conn: psycopg.Connection) -> None:
    prepare(db_url)
    with Ops(direct_settings(db_url)) as ops:
        for n in range(10):
            ops.propose("brain", f"chain {n}", [step("alpha"), step("alpha"), step("alpha")])
    with counted_worker(db_url, {"alpha": quick}, concurrency=8) as (_, calls):
        wait_until(finished(conn, 10), 30, "10 missions")
    assert scalar(conn, "select count(*) from ops_mission_steps where status = 'succeeded' and attempt = 1") == 30
    assert scalar(conn, "select count(*) from ops_missions where status = 'succeeded'") == 10
    assert calls["ops_complete_step"] == calls["ops_fail_step"] == 0, calls
    # Every result went with a claim: at most one call per step carries reports, and claims ride along.
    assert 1 <= calls["ops_report_and_claim"] <= 30, calls
    assert scalar(conn, "select count(*) from ops_agent_events where type = 'step:succeeded'") == 30


def test_a_result_the_database_refuses_is_sent_alone_and_the_others_still_succeed(
    db_url: str, conn: psycopg.Connection
) -> None:
    """An output over 1 MiB makes the database refuse the whole batch call: each result is then sent alone,
    where the large one fails for good ('output rejected') and the rest succeed."""
    prepare(db_url)
    release = threading.Barrier(4, timeout=10)

    def together(ctx: StepContext) -> dict[str, Any]:
        release.wait()  # finish at the same moment, so results share a call
        return {"blob": "x" * 1_100_000} if ctx.payload.get("huge") else {"ok": True}

    with Ops(direct_settings(db_url)) as ops:
        for n in range(4):
            ops.propose("brain", f"batch {n}", [step("alpha", {"huge": n == 0})])
    with counted_worker(db_url, {"alpha": together}, concurrency=4) as (_, calls):
        wait_until(finished(conn, 4), 30, "4 missions")
    found = conn.execute("select status, count(*) from ops_mission_steps group by status order by status")
    assert found.fetchall() == [("failed", 1), ("succeeded", 3)]
    error = scalar(conn, "select last_error from ops_mission_steps where status = 'failed'")
    assert error.startswith("output rejected: "), error
    # The refused batch's results were sent alone: the large one as a completion (refused), then as a failure.
    assert calls["ops_complete_step"] >= 1, calls
    assert calls["ops_fail_step"] == 1, calls


def test_results_finishing_close_together_go_out_in_one_call(
    db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop waits (up to the flush window) for the steps still running before it sends the results it has:
    eight steps claimed together and finishing 40 ms apart go out in one call, not one call per finish."""
    prepare(db_url)
    monkeypatch.setattr(reports, "FLUSH_WINDOW", 5.0)  # wide, so that a slow machine cannot split them
    carried: list[int] = []

    def staggered(ctx: StepContext) -> dict[str, Any]:
        time.sleep(0.04 * ctx.payload["n"])
        return {}

    with Ops(direct_settings(db_url)) as ops:
        for n in range(8):
            ops.propose("brain", f"staggered {n}", [step("alpha", {"n": n})])
    with counted_worker(db_url, {"alpha": staggered}, concurrency=8, carried=carried) as (_, calls):
        wait_until(finished(conn, 8), 30, "8 missions")
    assert scalar(conn, "select count(*) from ops_mission_steps where status = 'succeeded'") == 8
    assert carried == [8], f"reports per call: {carried}"
    assert calls["ops_complete_step"] == 0, calls


def test_gather_waits_for_running_steps_at_most_the_window() -> None:
    queue = reports.ReportQueue()
    started = time.monotonic()
    queue.gather(lambda: 3, window=1.0)
    assert time.monotonic() - started < 0.5, "nothing waiting: no wait"

    queue.submit(StepResult(1, 1, {}, None, False, None))
    started = time.monotonic()
    queue.gather(lambda: 2, window=0.2)
    took = time.monotonic() - started
    assert 0.19 <= took < 1.0, f"one of two slots still running: waits the window ({took:.2f}s)"

    threading.Timer(0.1, queue.submit, args=(StepResult(2, 1, {}, None, False, None),)).start()
    started = time.monotonic()
    queue.gather(lambda: 2, window=5.0)
    took = time.monotonic() - started
    assert took < 2.0, f"the last running step's result arrived: sent then, not at the window's end ({took:.2f}s)"
    assert len(queue) == 2


def test_with_batching_off_each_result_is_its_own_call(db_url: str, conn: psycopg.Connection) -> None:
    prepare(db_url)
    with Ops(direct_settings(db_url)) as ops:
        for n in range(4):
            ops.propose("brain", f"single {n}", [step("alpha")])
    with counted_worker(db_url, {"alpha": quick}, concurrency=2, batch_reports=False) as (_, calls):
        wait_until(finished(conn, 4), 30, "4 missions")
    assert calls["ops_complete_step"] == 4, calls
    assert calls["ops_report_and_claim"] == 0, calls
