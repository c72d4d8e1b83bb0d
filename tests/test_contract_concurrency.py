"""Contract tests of the SQL API: the concurrency claims, with real concurrent connections.

Each worker thread owns its own service_role connection; all are released together by a threading.Barrier.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest

from agent_ops import step
from tests.kit.contract import claim, events, propose, rpc, run_concurrently, service
from tests.kit.database import scalar
from tests.kit.races import GATES, gate_race, trigger_race


@pytest.mark.parametrize("gate", list(GATES))
def test_gate_race_30_concurrent_proposals_against_a_quota_of_5_accept_exactly_5(db_url: str, gate: str) -> None:
    """Gates hold under concurrency (docs/architecture.md, invariant 4): proposals at once against a quota of 5
    accept exactly 5, for each counted gate; rejections carry their reason. The chaos suite's R4 runs the same
    race with 200 proposals."""
    race = gate_race(db_url, gate, proposals=30)
    assert race.problems() == []
    assert race.accepted == 5


@pytest.mark.parametrize(
    ("step_statuses", "terminal"),
    [(["succeeded", "succeeded"], "succeeded"), (["succeeded", "failed"], "failed")],
    ids=["all-succeeded", "one-failed"],
)
def test_concurrent_finalize_writes_exactly_one_terminal_event(
    db_url: str, conn: psycopg.Connection, step_statuses: list[str], terminal: str
) -> None:
    """Finalization is idempotent (docs/architecture.md, invariant 3): concurrent calls produce exactly one
    terminal mission event."""
    with service(db_url) as api:
        created = propose(api, [step("crawl", depends_on=[]), step("analyze", depends_on=[])])
        mission_id = created["mission_id"]
        claimed = claim(api, max_steps=2)
        assert len(claimed) == 2
    # Arrange a mission whose steps are all finished while the mission row still says running: finish the steps
    # behind the functions' back (replica role: no triggers fire, so nothing finalizes the mission).
    conn.execute("set session_replication_role = replica")
    for position, status in enumerate(step_statuses):
        conn.execute(
            "update public.ops_mission_steps set status = %s, finished_at = now(), output = '{}',"
            " last_error = case when %s = 'failed' then 'arranged' end"
            " where mission_id = %s and position = %s",
            [status, status, mission_id, position],
        )
    conn.execute("set session_replication_role = origin")
    assert scalar(conn, b"select status from public.ops_missions where id = %s", [mission_id]) == "running"

    results = run_concurrently(db_url, 10, lambda c, _i: rpc(c, "ops_finalize_mission", mission_id=mission_id))

    assert {r["status"] for r in results} == {terminal}
    assert scalar(conn, b"select status from public.ops_missions where id = %s", [mission_id]) == terminal
    terminal_events = [
        e
        for e in events(conn, mission_id=mission_id)
        if e["type"] in ("mission:succeeded", "mission:failed", "mission:cancelled")
    ]
    assert len(terminal_events) == 1, terminal_events
    assert terminal_events[0]["type"] == f"mission:{terminal}"


@pytest.mark.parametrize("function", ["ops_heartbeat", "ops_evaluate_triggers"])
def test_10_concurrent_heartbeats_fire_each_due_trigger_once(
    db_url: str, conn: psycopg.Connection, function: str
) -> None:
    """10 concurrent heartbeats (or trigger evaluations) fire each due trigger once: one firing counted, one
    proposal, one trigger:fired event, for a rule of every checker kind. The chaos suite's R5 runs the same race
    with more rules."""
    race = trigger_race(db_url, function, callers=10, copies=1)
    assert race.problems() == []
    fired = Counter(e["payload"].get("rule_id") for e in events(conn, "trigger:fired"))
    assert sorted(fired.values()) == [1, 1, 1, 1]
    if function == "ops_heartbeat":
        ran = [r for r in race.results if "skipped" not in r]
        assert ran, race.results
        assert all(r == {"skipped": "busy"} for r in race.results if "skipped" in r)
        assert scalar(conn, b"select count(*) from public.ops_action_runs where action = 'heartbeat'") == len(ran)


def test_dedupe_race_20_concurrent_same_key_make_one_proposal(db_url: str, conn: psycopg.Connection) -> None:
    """'Same dedupe_key again returns the first result with duplicate: true and writes nothing.'"""

    def work(connection: psycopg.Connection, index: int) -> dict[str, Any]:
        return propose(connection, [step("crawl", {"n": 1})], title="same", dedupe_key="race-key-1")

    results = run_concurrently(db_url, 20, work)
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals where dedupe_key = 'race-key-1'") == 1
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals") == 1
    assert scalar(conn, b"select count(*) from public.ops_missions") == 1
    assert scalar(conn, b"select count(*) from public.ops_mission_steps") == 1
    assert Counter(r["duplicate"] for r in results) == {False: 1, True: 19}
    assert len({r["proposal_id"] for r in results}) == 1
    assert len({(r["status"], r["mission_id"]) for r in results}) == 1
    assert len(events(conn, "proposal:created")) == 1
