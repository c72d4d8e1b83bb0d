"""Contract tests of the SQL API: the concurrency claims, with real concurrent connections.

Each worker thread owns its own service_role connection; all are released together by a threading.Barrier.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.contract_helpers import (
    claim,
    complete,
    events,
    get_policy,
    propose,
    rows,
    rpc,
    run_concurrently,
    scalar,
    service,
    set_policy,
    step,
)


def test_gate_race_100_concurrent_proposals_against_a_quota_of_5_accept_exactly_5(
    db_url: str, conn: psycopg.Connection
) -> None:
    """'Gates hold under concurrency: 100 concurrent proposals against a quota of 5 accept exactly 5'."""
    with service(db_url) as api:
        gates = get_policy(api, "step_kind_gates")
        gates["post_tweet"] = {"daily_limit": 5}
        set_policy(api, "step_kind_gates", gates)
        auto = get_policy(api, "auto_approve")
        auto["allowed_step_kinds"] = [*auto["allowed_step_kinds"], "post_tweet"]
        set_policy(api, "auto_approve", auto)
    # Isolate the quota lock under test: without these keys the daily-limit and active-mission gates take no
    # lock, and every proposal comes from a different agent, so nothing else serializes the race.
    conn.execute("delete from public.ops_policy where key in ('daily_proposal_limit', 'max_active_missions')")

    def work(connection: psycopg.Connection, index: int) -> dict[str, Any]:
        return propose(
            connection, [step("post_tweet", {"text": f"tweet {index}"})], agent_id=f"agent-{index}", title=f"t{index}"
        )

    results = run_concurrently(db_url, 100, work)
    statuses = Counter(r["status"] for r in results)
    assert statuses == {"accepted": 5, "rejected": 95}, statuses
    for result in results:
        if result["status"] == "rejected":
            assert result["reason"], result
            assert result["mission_id"] is None
        else:
            assert result["mission_id"] is not None
    assert scalar(conn, b"select count(*) from public.ops_mission_steps where kind = 'post_tweet'") == 5
    assert scalar(conn, b"select count(*) from public.ops_missions") == 5
    stored = rows(conn, b"select status, count(*) from public.ops_mission_proposals group by status")
    assert dict(stored) == {"accepted": 5, "rejected": 95}
    assert (
        scalar(
            conn,
            b"select count(*) from public.ops_mission_proposals where status = 'rejected' and rejection_reason > ''",
        )
        == 95
    )


def test_exactly_once_claim_8_connections_over_2000_steps(db_url: str, conn: psycopg.Connection) -> None:
    """'exactly-once claim (8 concurrent connections over 2,000 steps -> every step claimed once)'."""
    missions: list[int] = []
    with service(db_url) as api:
        set_policy(api, "daily_proposal_limit", {"limit": 10000, "per_agent": {}})
        set_policy(api, "max_active_missions", {"limit": 1000})
        for m in range(200):
            kinds = ["crawl", "analyze"]
            result = propose(
                api,
                [step(kinds[i % 2], {"m": m, "i": i}, depends_on=[]) for i in range(10)],
                agent_id=f"agent-{m % 7}",
                title=f"bulk {m}",
            )
            assert result["status"] == "accepted", result
            missions.append(result["mission_id"])
    all_ids = {r[0] for r in rows(conn, b"select id from public.ops_mission_steps where status = 'queued'")}
    assert len(all_ids) == 2000

    def work(connection: psycopg.Connection, index: int) -> list[int]:
        rng = random.Random(index)
        seen: list[int] = []
        empty = 0
        while empty < 3:
            batch = claim(connection, worker_id=f"w{index}", max_steps=rng.randint(2, 12))
            if not batch:
                empty += 1
                continue
            empty = 0
            for item in batch:
                seen.append(item["id"])
                assert item["attempt"] == 1, item
                complete(connection, item["id"], item["attempt"], {"by": index})
        return seen

    per_thread = run_concurrently(db_url, 8, work)
    claims = Counter(step_id for seen in per_thread for step_id in seen)
    assert set(claims) == all_ids
    assert [sid for sid, n in claims.items() if n != 1] == []
    assert sum(claims.values()) == 2000
    assert sum(1 for seen in per_thread if seen) > 1, "only one connection ever claimed anything"
    assert dict(rows(conn, b"select status, count(*) from public.ops_mission_steps group by status")) == {
        "succeeded": 2000
    }
    assert dict(rows(conn, b"select status, count(*) from public.ops_missions group by status")) == {"succeeded": 200}
    assert scalar(conn, b"select count(*) from public.ops_agent_events where type = 'mission:succeeded'") == 200


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


def test_10_concurrent_heartbeats_fire_each_due_trigger_once(db_url: str, conn: psycopg.Connection) -> None:
    """'10 concurrent heartbeats -> each due trigger fires once'."""
    conn.execute(
        "update public.ops_trigger_rules set enabled = true, next_due_at = null, skip_probability = 0"
        " where trigger_event = 'schedule'"
    )
    due = dict(rows(conn, b"select id, name from public.ops_trigger_rules where enabled"))
    assert len(due) == 4

    results = run_concurrently(db_url, 10, lambda c, _i: rpc(c, "ops_heartbeat"))

    ran = [r for r in results if "skipped" not in r]
    assert ran, results
    for r in results:
        if "skipped" in r:
            assert r == {"skipped": "busy"}
    fire_counts = dict(rows(conn, b"select id, fire_count from public.ops_trigger_rules where enabled"))
    assert fire_counts == dict.fromkeys(due, 1)
    fired = Counter(e["payload"].get("rule_id") for e in events(conn, "trigger:fired"))
    assert len(events(conn, "trigger:fired")) == 4
    assert fired == dict.fromkeys(due, 1)
    proposals = rows(conn, b"select agent_id, title from public.ops_mission_proposals where source = 'trigger'")
    assert len(proposals) == 4, proposals
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
