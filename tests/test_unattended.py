"""Left alone, the loop tells people what needs them and heals what it can: one scenario, end to end, with
real worker processes, a real heartbeat loop (`agent-ops heartbeat --every 1`, which also delivers
notifications) and a local webhook receiver.

1. A kind no worker serves → one `queue:stalled` episode, and one notification for it.
2. Hung executors → their steps fail as timed out within their timeout and one heartbeat, and the worker's
   slots are free again for the next step.
3. A poison kind → the circuit breaker opens once across two workers, new proposals for the kind are refused
   with the reason, and once the fault is fixed the half-open probe closes it, without a person.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent_ops import Ops, step
from tests.kit.children import wait_until
from tests.kit.database import scalar
from tests.kit.settings import direct_settings
from tests.test_notifications import Receiver
from tests.test_worker import TEST_KINDS, Workers, prepare

HOOK = "/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def ops(db_url: str) -> Iterator[Ops]:
    with Ops(direct_settings(db_url)) as client:
        yield client


def notified(receiver: Receiver, event_type: str) -> list[dict[str, Any]]:
    return [r.body["event"] for r in receiver.at(HOOK) if r.body["event"]["type"] == event_type]


def events(conn: psycopg.Connection, event_type: str) -> int:
    return int(scalar(conn, "select count(*) from ops_agent_events where type = %s", (event_type,)))


def test_left_alone_the_loop_alerts_times_out_and_heals(
    db_url: str, conn: psycopg.Connection, ops: Ops, receiver: Receiver, tmp_path: Path
) -> None:
    prepare(db_url)
    flag = tmp_path / "poison.flag"
    flag.touch()
    ops.set_policy("auto_approve", {"enabled": True, "allowed_step_kinds": [*TEST_KINDS, "poison", "orphan"]}, "t")
    ops.set_policy("alerts", {"queued_age_seconds": 10}, "t")
    ops.set_policy(
        "worker_policy",
        {"lease_seconds": 30, "max_attempts": 3, "backoff_base_seconds": 0, "circuit_breaker_threshold": 3,
         "breaker_cooldown_seconds": 2, "kinds": {"hung": {"timeout_seconds": 2}}},
        "t",
    )  # fmt: skip
    sink = {"name": "ops", "url_env": "OPS_HOOK_URL", "format": "json",
            "types": ["queue:stalled", "worker:circuit_open", "worker:circuit_closed"]}  # fmt: skip
    ops.set_policy("notifications", {"enabled": True, "sinks": [sink]}, "t")

    with Workers(db_url, tmp_path) as loop:
        loop.start("heartbeat", [sys.executable, "-m", "agent_ops", "heartbeat", "--every", "1"],
                   env={"OPS_HOOK_URL": receiver.url(HOOK)})  # fmt: skip
        loop.spawn("worker-1", "--concurrency", "2", "--kinds", "hung,beta,poison", env={"POISON_FLAG": str(flag)})
        loop.spawn("worker-2", "--concurrency", "2", "--kinds", "poison,alpha", env={"POISON_FLAG": str(flag)})
        try:
            # 1. Nobody serves `orphan`: stalled once, notified once, while the heartbeat keeps beating.
            orphan = ops.propose("brain", "nobody runs this", [step("orphan")])
            conn.execute("update ops_mission_steps set run_after = now() - interval '11 seconds' where kind = 'orphan'")
            wait_until(lambda: notified(receiver, "queue:stalled"), 20, "a queue:stalled notification")
            [stalled] = notified(receiver, "queue:stalled")
            assert (stalled["payload"]["kind"], stalled["payload"]["reason"]) == ("orphan", "no_worker")
            beats = int(scalar(conn, "select count(*) from ops_action_runs where action = 'heartbeat'"))
            wait_until(
                lambda: scalar(conn, "select count(*) from ops_action_runs where action = 'heartbeat'") >= beats + 3,
                20,
                "three more heartbeats",
            )
            assert events(conn, "queue:stalled") == 1, "one event per episode, not one per heartbeat"
            assert len(notified(receiver, "queue:stalled")) == 1
            assert orphan.mission_id is not None

            # 2. Two hung executors fill worker-1's two slots; at their deadline both fail as timed out, and
            #    the slots run the next step (only worker-1 serves `beta`).
            hung = [ops.propose("brain", f"hangs {n}", [step("hung")]).mission_id for n in range(2)]
            wait_until(lambda: scalar(conn, "select count(*) from test_executions where kind = 'hung'") == 2, 20,
                       "both hung steps to start")  # fmt: skip
            began = time.monotonic()
            ops.propose("brain", "after the hung ones", [step("beta")])
            took = wait_until(
                lambda: (
                    scalar(conn, "select count(*) from ops_mission_steps where kind = 'beta' and status = 'succeeded'")
                    == 1
                ),
                15,
                "the next step on a freed slot",
            )
            assert took < 2 + 1 + 2, f"the slots freed {took:.1f}s after the hung steps started (timeout 2 s)"
            # The timeout reports go out on threads of their own as the slots free: give them a moment.
            wait_until(
                lambda: scalar(conn, "select count(*) from ops_mission_steps where mission_id = any(%s)"
                                     " and last_error = 'timed out after 2 s'", (hung,)) == 2,
                10, "both timeout reports",
            )  # fmt: skip
            for mission in hung:
                status, error = conn.execute(
                    "select status, last_error from ops_mission_steps where mission_id = %s", (mission,)
                ).fetchone() or (None, None)
                assert (status, error) in (("queued", "timed out after 2 s"), ("running", "timed out after 2 s"),
                                           ("failed", "timed out after 2 s")), (status, error)  # fmt: skip
            assert time.monotonic() - began < 15

            # 3. A poison kind, served by both workers: three failing steps open the breaker once.
            for n in range(3):
                ops.propose("growth", f"poison {n}", [step("poison")])
            wait_until(lambda: events(conn, "worker:circuit_open") >= 1, 30, "the breaker to open")
            assert ops.get_policy("worker:poison").value["enabled"] is False
            refused = ops.propose("growth", "more poison", [step("poison")])
            assert refused.status == "rejected"
            assert (refused.reason or "").startswith("step kind poison is disabled (worker:poison): circuit breaker")
            wait_until(lambda: notified(receiver, "worker:circuit_open"), 20, "a circuit_open notification")

            # The fault is fixed; nobody touches the kind. After the cool-down one probe succeeds and closes it.
            flag.unlink()
            wait_until(lambda: events(conn, "worker:circuit_closed") == 1, 30, "the probe to close the breaker")
            assert events(conn, "worker:circuit_open") == 1, "opened once, across both workers"
            assert ops.get_policy("worker:poison").value["enabled"] is True
            wait_until(
                lambda: (
                    scalar(
                        conn, "select count(*) from ops_mission_steps where kind = 'poison' and status = 'succeeded'"
                    )
                    == 3
                ),
                30,
                "the held poison steps to run once the kind is closed again",
            )
            assert ops.propose("growth", "poison again", [step("poison")]).status == "accepted"
            wait_until(lambda: notified(receiver, "worker:circuit_closed"), 20, "a circuit_closed notification")
            assert ops.status().alerts["open_breakers"] == 0
        finally:
            loop.stop(sig=signal.SIGKILL, timeout=15)  # the hung executors never return
