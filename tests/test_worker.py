"""The worker with real worker processes against the real Postgres: exactly-once, crash recovery, graceful
stop, database restart, the shared circuit breaker, LISTEN wake-up. Run-time limits and presence:
tests/test_worker_limits.py; outages: tests/test_worker_outages.py."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from agent_ops import Ops, step
from tests.deep_json import plant
from tests.kit.children import CheckoutProcesses, wait_until
from tests.kit.database import migrate_and_seed, row, scalar, scratch_server, set_policies
from tests.kit.settings import direct_settings
from tests.kit.workload import exactly_once, restart_mid_run
from tests.test_executors import QuietServer, Recorder
from vps_worker.config import WorkerSettings
from vps_worker.executors import PermanentError, RetryableError, StepContext
from vps_worker.worker import NOTIFY_MIN_INTERVAL, Worker

TEST_KINDS = ["alpha", "beta", "gamma", "slow", "broken", "exits", "nul", "nan", "huge", "leaky", "hung", "http", "llm"]


def prepare(url: str) -> None:
    """Test kinds auto-approved, no quotas in the way, immediate retries, an execution log."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists test_executions (step_id bigint, attempt int, kind text, "
                     "worker_id text, event text, at timestamptz default clock_timestamp())")  # fmt: skip
    set_policies(
        url,
        {
            "auto_approve": {"enabled": True, "allowed_step_kinds": TEST_KINDS},
            "daily_proposal_limit": {"limit": 100000},
            "max_active_missions": {"limit": 100000},
            "worker_policy": {"lease_seconds": 30, "max_attempts": 3, "backoff_base_seconds": 0},
        },
    )


class Workers(CheckoutProcesses):
    """`python -m vps_worker` processes with the test executors (tests/worker_executors.py)."""

    def __init__(self, url: str, logs: Path) -> None:
        super().__init__(logs, DATABASE_URL=url, TEST_RECORD_URL=url)

    def spawn(self, worker_id: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start_worker(
            worker_id,
            "--executors",
            "tests.worker_executors",
            "--poll-min",
            "0.2",
            "--poll-max",
            "0.5",
            *args,
            env={"WORKER_ID": worker_id, **(env or {})},
        )


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    prepare(db_url)
    with Workers(db_url, tmp_path) as running:
        yield running
        running.stop(timeout=15)


@pytest.fixture
def ops(db_url: str) -> Iterator[Ops]:
    with Ops(direct_settings(db_url)) as client:
        yield client


def test_steps_claimed_by_competing_workers_are_each_executed_exactly_once(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    """docs/architecture.md, invariant 2: 4 worker processes (4 executor threads each) claim the 250 steps of
    50 diamond missions at once; each step runs exactly once by the executors' own records, at its first
    attempt, and every mission succeeds. The chaos suite's R1 runs the same scenario with 5,000 and 50,000."""
    drained = exactly_once(db_url, steps=250, workers=4, logs=tmp_path)
    assert drained.problems() == []
    assert len(drained.tally.processes) > 1, "only one worker ever ran anything"
    assert scalar(conn, "select count(*) from ops_mission_steps where attempt <> 1") == 0


def test_a_killed_worker_s_step_is_recovered_after_its_lease_and_finished_by_the_other(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    mission = ops.propose("brain", "survives a crash", [step("slow", {"seconds": 2})]).mission_id
    victim = workers.spawn("worker-victim", "--lease-seconds", "2", "--kinds", "slow")
    wait_until(lambda: scalar(conn, "select count(*) from test_executions where event = 'started'") == 1, 20, "a start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert scalar(conn, "select status from ops_mission_steps") == "running", "the dead worker's lease still holds"
    workers.spawn("worker-heir", "--kinds", "slow")
    wait_until(
        lambda: (ops.heartbeat() and False) or scalar(conn, "select status from ops_missions") == "succeeded",
        40,
        "recovery",
    )
    final = conn.execute("select attempt, reserved_by, last_error from ops_mission_steps").fetchone()
    assert final is not None
    assert final[:2] == (2, "worker-heir")
    assert conn.execute("select worker_id, attempt, event from test_executions order by at").fetchall() == [
        ("worker-victim", 1, "started"),
        ("worker-heir", 2, "started"),
        ("worker-heir", 2, "finished"),
    ]
    assert ops.mission(int(mission or 0)).status == "succeeded"


def test_sigterm_finishes_what_fits_in_the_grace_period_and_hands_back_the_rest(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    quick = ops.propose("brain", "quick", [step("slow", {"seconds": 0.8})]).mission_id
    long = ops.propose("brain", "long", [step("slow", {"seconds": 60})]).mission_id
    worker = workers.spawn("worker-t", "--grace-seconds", "2", "--concurrency", "2", "--kinds", "slow")
    wait_until(
        lambda: scalar(conn, "select count(*) from test_executions where event = 'started'") == 2, 20, "both started"
    )
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert time.monotonic() - started < 6, "stops within the grace period plus a report"
    assert ops.mission(int(quick or 0)).status == "succeeded", "the quick step finished within the grace period"
    handed_back = conn.execute(
        "select s.status, s.attempt, s.max_attempts, s.last_error, s.reserved_by, s.run_after <= now() "
        "from ops_mission_steps s where s.mission_id = %s",
        (long,),
    ).fetchone()
    assert handed_back == ("queued", 1, 4, "worker shutdown", None, True), "queued again at once, attempt not counted"
    assert "worker stopped" in workers.log("worker-t")
    heir = workers.spawn("worker-heir", "--kinds", "slow")
    wait_until(
        lambda: scalar(conn, "select count(*) from test_executions where worker_id = 'worker-heir'") == 1,
        10,
        "takeover",
    )
    heir.send_signal(signal.SIGTERM)


def test_the_circuit_breaker_opens_after_3_consecutive_failures(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    """Pitfall P10, with the breaker in the database and shared by every worker: one worker process fails two
    steps of a poison kind and stops; another fails a third, and that opens the breaker - once (one
    worker:circuit_open, written by SQL, not the worker), the kind disabled by `circuit_breaker`. Claims then
    stop handing the kind out while other kinds still run."""
    ops.set_policy("worker_policy", {"lease_seconds": 30, "max_attempts": 1, "backoff_base_seconds": 0}, "test")
    failed = "select count(*) from ops_mission_steps where status = 'failed'"
    for n in range(2):
        ops.propose("brain", f"doomed {n}", [step("broken")])
    first = workers.spawn("worker-cb-1", "--concurrency", "1", "--kinds", "broken,alpha")
    wait_until(lambda: scalar(conn, failed) == 2, 30, "two failures")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    assert ops.get_policy("worker:broken").value is None, "two failures: still closed"
    for n in range(2, 6):
        ops.propose("brain", f"doomed {n}", [step("broken")])
    workers.spawn("worker-cb-2", "--concurrency", "1", "--kinds", "broken,alpha")
    wait_until(lambda: ops.get_policy("worker:broken").value is not None, 30, "the breaker to open")
    flag = ops.get_policy("worker:broken")
    assert flag.value["enabled"] is False
    assert flag.value["failures"] == 3
    assert flag.updated_by == "circuit_breaker"
    time.sleep(1.5)
    ran = conn.execute("select worker_id, count(*) from test_executions where kind = 'broken' group by 1").fetchall()
    assert dict(ran) == {"worker-cb-1": 2, "worker-cb-2": 1}, "the first failure on the second worker opened it"
    assert scalar(conn, "select count(*) from ops_mission_steps where status = 'queued'") == 3, "the rest wait"
    opened = ops.events(type="worker:circuit_open")
    assert len(opened) == 1
    assert opened[0].payload["kind"] == "broken"
    assert opened[0].source == "system"
    for name in ("worker-cb-1", "worker-cb-2"):
        assert "circuit" not in workers.log(name), "the worker only reports; it neither opens nor announces"
    ops.propose("brain", "other kinds still run", [step("alpha")])
    wait_until(lambda: scalar(conn, "select count(*) from test_executions where kind = 'alpha'") == 1, 10, "alpha")


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll-only"])
def test_listen_wakes_an_idle_worker_well_before_its_poll_interval(
    workers: Workers, ops: Ops, conn: psycopg.Connection, listen: bool
) -> None:
    args = ["--kinds", "alpha", "--poll-min", "20", "--poll-max", "20"] + ([] if listen else ["--no-listen"])
    workers.spawn("worker-idle", *args)
    wait_until(lambda: "worker started" in workers.log("worker-idle"), 20, "the worker")
    time.sleep(1.0)  # idle now: its next poll is ~19 s away
    proposed = time.monotonic()
    ops.propose("brain", "wake up", [step("alpha")])
    if listen:
        wait_until(lambda: scalar(conn, "select count(*) from test_executions") == 1, 5, "a LISTEN wake-up")
        assert time.monotonic() - proposed < 2.0
    else:
        time.sleep(3.0)
        assert scalar(conn, "select count(*) from test_executions") == 0, "without LISTEN it waits for its poll"


def test_bad_executor_behaviour_fails_the_step_instead_of_wedging_the_worker(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    ops.set_policy("worker_policy", {"lease_seconds": 30, "max_attempts": 1, "backoff_base_seconds": 0}, "test")
    for kind in ("exits", "nul", "nan", "huge"):
        ops.propose("brain", kind, [step(kind)])
    workers.spawn("worker-bad", "--concurrency", "1", "--kinds", "exits,nul,nan,huge,alpha")
    wait_until(lambda: scalar(conn, "select count(*) from ops_missions where status = 'failed'") == 4, 30, "4 failures")
    errors: dict[str, str] = dict(conn.execute("select kind, last_error from ops_mission_steps").fetchall())
    assert errors["exits"] == "SystemExit: an executor must not take the worker down"
    assert errors["nul"] == "binary body: \\0\x01"
    assert errors["nan"].startswith("output is not JSON-serialisable")
    assert errors["huge"] == "output rejected: output must be at most 1048576 bytes of JSON"
    ops.propose("brain", "still working", [step("alpha")])
    wait_until(
        lambda: scalar(conn, "select count(*) from test_executions where kind = 'alpha'") == 1, 10, "the slot back"
    )


def test_a_step_recovered_and_reclaimed_by_the_same_worker_is_a_new_run(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    ops.propose("brain", "reclaimed", [step("slow", {"seconds": 3})])
    workers.spawn("worker-same", "--concurrency", "2", "--kinds", "slow,alpha")
    wait_until(lambda: scalar(conn, "select count(*) from test_executions where event = 'started'") == 1, 20, "a start")
    # As if an outage outlasted the lease: recovered while attempt 1 still runs, then claimed again here.
    conn.execute("update ops_mission_steps set lease_expires_at = now() - interval '1 second'")
    assert ops.call("ops_recover_stale_steps")["requeued"] == 1
    wait_until(lambda: scalar(conn, "select status from ops_missions") == "succeeded", 30, "attempt 2 to finish")
    assert scalar(conn, "select attempt from ops_mission_steps") == 2
    runs = conn.execute("select attempt, event from test_executions where kind = 'slow' order by at").fetchall()
    assert (2, "finished") in runs
    assert (1, "finished") not in runs, "attempt 1 was cancelled when its lease was found lost"
    for n in range(2):
        ops.propose("brain", f"after {n}", [step("alpha")])
    wait_until(lambda: scalar(conn, "select count(*) from test_executions where kind = 'alpha'") == 2, 10, "both slots")


def test_a_step_nested_too_deeply_fails_alone_at_its_first_attempt_and_its_batch_runs(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    deep = ops.propose("brain", "deep", [step("alpha")]).mission_id
    independent = [step("alpha"), step("beta", depends_on=[])]
    healthy = [ops.propose("brain", f"healthy {n}", independent).mission_id for n in range(2)]
    bad = scalar(conn, "select id from ops_mission_steps where mission_id = %s", (deep,))
    plant(conn, "ops_mission_steps", "payload", bad)  # as a row from before the SQL limited nesting
    workers.spawn("worker-deep", "--concurrency", "8", "--kinds", "alpha,beta")
    wait_until(lambda: scalar(conn, "select count(*) from ops_missions where finalized_at is not null") == 3, 20, "3")
    assert scalar(conn, "select count(distinct reserved_at) from ops_mission_steps") == 1, "one batch claimed all 5"
    failed = conn.execute("select status, attempt, last_error from ops_mission_steps where id = %s", (bad,)).fetchone()
    assert failed == ("failed", 1, "payload nested deeper than the worker can decode (128 levels)")
    for mission in healthy:
        assert ops.mission(int(mission or 0)).status == "succeeded"
    assert scalar(conn, "select count(*) from ops_mission_steps where status = 'succeeded' and attempt = 1") == 4
    assert scalar(conn, "select count(*) from test_executions") == 4, "each healthy step ran once, the bad one never"


def claims_counted(conn: psycopg.Connection) -> None:
    """Count calls of the SQL functions (pg_stat_user_functions) in sessions opened from now on."""
    conn.execute(sql.SQL("alter database {} set track_functions = 'all'").format(sql.Identifier(conn.info.dbname)))


def claims_so_far(conn: psycopg.Connection, worker_id: str) -> int:
    """ops_claim_next_step calls, once the worker's sessions have ended (a backend reports them as it exits)."""
    sessions = "select count(*) from pg_stat_activity where application_name = 'agent-ops' and datname = %s"
    wait_until(lambda: scalar(conn, sessions, (conn.info.dbname,)) == 0, 10, f"{worker_id}'s sessions to end")
    conn.execute("select pg_stat_clear_snapshot()")
    calls = "select coalesce(sum(calls), 0) from pg_stat_user_functions where funcname = %s"
    return int(scalar(conn, calls, ("ops_claim_next_step",)))


@pytest.mark.parametrize("kind", ["alpha", "zeta"], ids=["served-kind", "other-kind"])
def test_a_notify_flood_costs_at_most_one_claim_per_interval(
    workers: Workers, conn: psycopg.Connection, db_url: str, kind: str
) -> None:
    claims_counted(conn)
    worker = workers.spawn("worker-flooded", "--kinds", "alpha", "--poll-min", "60", "--poll-max", "60")
    wait_until(lambda: "worker started" in workers.log("worker-flooded"), 20, "the worker")
    time.sleep(1.0)  # idle now, its first claims done; no poll for a minute
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as flood:
        flood.execute("set role anon")  # any role may notify
        for _ in range(100):  # 20,000 over about 2 s
            with flood.pipeline():  # each its own transaction: Postgres folds repeats only within one
                for _ in range(200):
                    flood.execute("select pg_notify('ops_steps', %s)", (kind,))
            time.sleep(0.02)
    flooded = time.monotonic() - started
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    claims = claims_so_far(conn, "worker-flooded")
    startup = 3  # after the start and when LISTEN begins
    if kind == "alpha":
        assert claims <= startup + (flooded + 0.5) / NOTIFY_MIN_INTERVAL + 3, f"{claims} claims in {flooded:.1f}s"
    else:
        assert claims <= startup, f"{claims} claims for notifications of a kind it does not serve"


def test_errors_and_outputs_are_reported_without_the_worker_s_secrets(
    workers: Workers, ops: Ops, conn: psycopg.Connection
) -> None:
    ops.set_policy("worker_policy", {"lease_seconds": 30, "max_attempts": 1, "backoff_base_seconds": 0}, "test")
    key = "sk-test-0123456789abcdef"
    failing = ops.propose("brain", "leaks in its error", [step("leaky")]).mission_id
    succeeding = ops.propose("brain", "leaks in its output", [step("leaky", {"succeed": True})]).mission_id
    workers.spawn("worker-leaky", "--kinds", "leaky", env={"LLM_API_KEY": key})
    wait_until(lambda: scalar(conn, "select count(*) from ops_missions where finalized_at is not null") == 2, 20, "2")
    error = scalar(conn, "select last_error from ops_mission_steps where mission_id = %s", (failing,))
    assert error == (
        "RuntimeError: upstream refused LLM_API_KEY=******** while connected to postgresql://u:********@h/db"
    )
    output = scalar(conn, "select output from ops_mission_steps where mission_id = %s", (succeeding,))
    assert output == {"said": "used ********", "calls": [{"dsn": "postgresql://u:********@h/db", "key ********": True}]}
    events = str(scalar(conn, "select jsonb_agg(to_jsonb(e))::text from ops_agent_events e"))
    assert "step:failed" in events
    assert "LLM_API_KEY=********" in events, "the step:failed event carries the redacted error"
    for secret in (key, ":pw@"):
        assert secret not in error + json.dumps(output) + events


@pytest.fixture
def openai_peer() -> Iterator[str]:
    """The OpenAI-compatible peer of tests/test_executors.py: replies with prompt_tokens 5, completion_tokens 3."""
    server = QuietServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Recorder.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_llm_executor_s_usage_reaches_the_step_and_the_day_s_spend_priced_from_model_prices(
    workers: Workers, ops: Ops, conn: psycopg.Connection, openai_peer: str
) -> None:
    ops.set_policy("model_prices", {"tiny-model": {"input_per_million": 1000, "output_per_million": 2000}}, "test")
    mission = ops.propose("brain", "ask", [step("llm", {"prompt": "hello"})]).mission_id
    workers.spawn("worker-llm", "--kinds", "llm", env={"LLM_BASE_URL": f"{openai_peer}/v1", "LLM_MODEL": "tiny-model"})
    wait_until(lambda: scalar(conn, "select status from ops_missions") == "succeeded", 20, "the llm step")
    output, usage = row(conn, "select output, usage from ops_mission_steps where mission_id = %s", (mission,))
    assert output["text"] == "echo: hello"
    # No cost from the worker: the database priced 5 tokens in at 1000 and 3 out at 2000 USD per million.
    assert usage == {"tokens_in": 5, "tokens_out": 3, "cost_usd": 0.011, "model": "tiny-model"}
    spent = conn.execute(
        "select agent_id, tokens_in, tokens_out, cost_usd::text, steps from ops_spend_daily order by 1"
    )
    assert spent.fetchall() == [("*", 5, 3, "0.01100000", 1), ("brain", 5, 3, "0.01100000", 1)]


def spends_then_fails(ctx: StepContext) -> None:
    ctx.add_usage(tokens_in=100, tokens_out=10, cost_usd=0.5, model="big-model")
    raise PermanentError("the reply was unusable")


def spends_then_hangs(ctx: StepContext) -> None:
    ctx.add_usage(tokens_in=7, model="big-model")
    ctx.cancelled.wait(30)  # until the deadline cancels it
    raise RetryableError("cancelled")


def spends_out_of_range(ctx: StepContext) -> dict[str, Any]:
    ctx.add_usage(tokens_in=2_000_000_000)  # past what the database accepts (1,000,000,000)
    return {"done": True}


def test_usage_goes_with_failures_and_timeouts_and_refused_usage_never_costs_the_result(
    db_url: str, ops: Ops, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, with executors of this test: what an attempt reported spending is sent with its failure, and
    with its timeout report; usage the database refuses is dropped (logged), the result is not."""
    prepare(db_url)
    policy = {
        "lease_seconds": 30,
        "max_attempts": 1,
        "backoff_base_seconds": 0,
        "kinds": {"beta": {"timeout_seconds": 1}},
    }
    ops.set_policy("worker_policy", policy, "test")
    for kind in ("alpha", "beta", "gamma"):
        ops.propose("brain", kind, [step(kind)])
    executors = {"alpha": spends_then_fails, "beta": spends_then_hangs, "gamma": spends_out_of_range}
    settings = WorkerSettings(
        worker_id="worker-usage", concurrency=3, poll_min=0.1, poll_max=0.3, listen=False, grace_seconds=1
    )
    caplog.set_level(logging.INFO, logger="vps_worker")
    with Ops(direct_settings(db_url, pool_size=4)) as worker_ops:
        worker = Worker(worker_ops, settings, executors)
        running = threading.Thread(target=worker.run, daemon=True)
        running.start()
        try:
            wait_until(
                lambda: scalar(conn, "select count(*) from ops_missions where finalized_at is not null") == 3, 30, "3"
            )
        finally:
            worker.request_stop()
            running.join(15)
    assert not running.is_alive()
    found = conn.execute("select kind, status, last_error, output, usage from ops_mission_steps order by kind")
    assert found.fetchall() == [
        ("alpha", "failed", "the reply was unusable", None,
         {"tokens_in": 100, "tokens_out": 10, "cost_usd": 0.5, "model": "big-model"}),
        ("beta", "failed", "timed out after 1 s", None,
         {"tokens_in": 7, "tokens_out": 0, "cost_usd": 0, "model": "big-model"}),
        ("gamma", "succeeded", None, {"done": True}, None),
    ]  # fmt: skip
    refused = [r for r in caplog.records if r.getMessage().startswith("usage refused by the database")]
    assert [r.fields["reason"] for r in refused] == ["usage.tokens_in must be from 0 to 1000000000"]  # type: ignore[attr-defined]
    assert scalar(conn, "select steps from ops_spend_daily where agent_id = 'brain'") == 2


def test_sigterm_during_a_long_idle_poll_stops_at_once(workers: Workers) -> None:
    worker = workers.spawn("worker-idle-stop", "--kinds", "alpha", "--poll-min", "30", "--poll-max", "30")
    wait_until(lambda: "worker started" in workers.log("worker-idle-stop"), 20, "the worker")
    time.sleep(0.5)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 2


def test_a_postgres_restart_under_running_workers_is_survived(tmp_path: Path) -> None:
    with scratch_server("restart") as server:
        url = server.url("postgres")
        migrate_and_seed(url)
        # An outage while idle: the claim loop backs off and logs the state change once each way.
        with Workers(url, tmp_path / "idle") as idle:
            worker = idle.spawn("worker-idle", "--kinds", "alpha")
            wait_until(lambda: "worker started" in idle.log("worker-idle"), 20, "the worker")
            # Only an outage the worker lives through counts: one before its first connection is a slow start.
            sessions = "select count(*) from pg_stat_activity where application_name = 'agent-ops'"
            wait_until(lambda: scalar(url, sessions) >= 2, 20, "the worker's connections")
            server.stop()
            time.sleep(3)
            server.start()
            wait_until(lambda: "database reachable again" in idle.log("worker-idle"), 40, "the worker to reconnect")
            assert idle.log("worker-idle").count("database unreachable") == 1
            assert worker.poll() is None, "the worker never crashed"
        # A restart mid-run (docs/architecture.md, invariant 2; pitfall P4): cut sessions, lost answers; every
        # step still runs exactly once. The chaos suite's R3 runs the same scenario with 2,000 and 10,000 steps.
        restarted = restart_mid_run(server, steps=150, workers=2, logs=tmp_path / "mid-run")
        assert restarted.problems() == []
