"""Contract tests of the SQL API: scenario tests of the loop's rules (docs/architecture.md, "The loop" and the
invariants)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from agent_ops import step
from tests.kit.contract import (
    claim,
    complete,
    events,
    fail,
    get_policy,
    message,
    mission_status,
    propose,
    rpc,
    rpc_error,
    service,
    set_policy,
    snapshot,
    step_rows,
    update_policy,
)
from tests.kit.database import row, rows, scalar


@pytest.fixture
def api(db_url: str) -> Any:
    with service(db_url) as connection:
        yield connection


def _now(owner: psycopg.Connection) -> datetime:
    value: datetime = scalar(owner, b"select now()")
    return value


def _enable_reactions(api: psycopg.Connection) -> dict[str, Any]:
    return update_policy(api, "reaction_matrix", enabled=True)


def _fail_mission(api: psycopg.Connection, agent_id: str = "scout") -> int:
    created = propose(api, [step("crawl"), step("analyze")], agent_id=agent_id, title="doomed")
    assert created["status"] == "accepted", created
    [item] = claim(api, kinds=["crawl"])
    result = fail(api, item["id"], item["attempt"], "fatal: site gone", retryable=False)
    assert result["status"] == "failed"
    assert result["mission_status"] == "failed"
    mission_id: int = created["mission_id"]
    return mission_id


# --- the full loop -------------------------------------------------------------------------------------------


def test_full_loop_failed_mission_reaction_diagnose_proposal_new_mission(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    """'the full loop (a failed mission -> mission:failed -> reaction -> diagnose proposal auto-approved -> new
    mission)'. Uses supabase/seed.sql's mission_failed_diagnose pattern (step_kind analyze, auto-approved),
    switched on."""
    _enable_reactions(api)
    failed_mission = _fail_mission(api)

    [failed_event] = events(conn, "mission:failed", mission_id=failed_mission)
    assert "mission:failed" in failed_event["tags"]
    reactions = rows(
        conn,
        b"select id, pattern, target_agent, reaction_type, step_kind, status, roll, event_id"
        b" from public.ops_agent_reactions",
    )
    assert len(reactions) == 1, reactions
    reaction_id, pattern, target, rtype, kind, status, roll, event_id = reactions[0]
    assert (pattern, target, rtype, kind, status) == (
        "mission_failed_diagnose",
        "brain",
        "diagnose",
        "analyze",
        "queued",
    )
    assert event_id == failed_event["id"]
    assert 0 <= roll < 1
    assert events(conn, "reaction:queued")

    beat = rpc(api, "ops_heartbeat")
    assert beat["reactions"]["done"] == 1, beat

    proposal = row(
        conn,
        b"select id, agent_id, source, status, dedupe_key, auto_approved from public.ops_mission_proposals"
        b" where source = 'reaction'",
    )
    proposal_id, agent_id, source, pstatus, dedupe_key, auto_approved = proposal
    assert (agent_id, source, pstatus, auto_approved) == ("brain", "reaction", "accepted", True)
    assert dedupe_key == f"reaction:{reaction_id}"
    new_mission = row(conn, b"select id, status from public.ops_missions where proposal_id = %s", [proposal_id])
    assert new_mission[1] == "approved"
    assert [(s["kind"], s["status"]) for s in step_rows(conn, new_mission[0])] == [("analyze", "queued")]
    assert row(conn, b"select status, proposal_id from public.ops_agent_reactions where id = %s", [reaction_id]) == (
        "done",
        proposal_id,
    )
    # Processing again creates nothing more: each event is matched once, each reaction processed once.
    again = rpc(api, "ops_process_reactions")
    assert again["processed"] == 0
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals where source = 'reaction'") == 1


def test_reaction_cooldown_per_pattern_target_type(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'checks the cooldown per (pattern, target, type)': two failures inside the 60-minute cooldown -> one."""
    _enable_reactions(api)
    _fail_mission(api, agent_id="scout")
    _fail_mission(api, agent_id="other")
    rpc(api, "ops_process_reactions")
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals where source = 'reaction'") == 1


def test_reaction_source_and_all_tags_must_match(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'source (* or agent), tags (all must be present)'."""
    pattern = {
        "name": "posted_to_analyze",
        "source": "twitter-alt",
        "tags": ["tweet", "posted", "viral"],
        "target": "growth",
        "type": "analyze",
        "probability": 1.0,
        "cooldown": 0,
    }
    set_policy(api, "reaction_matrix", {"enabled": True, "patterns": [pattern]})
    rpc(api, "ops_emit_event", event={"type": "tweet:posted", "agent_id": "someone-else", "tags": ["viral"]})
    rpc(api, "ops_emit_event", event={"type": "tweet:posted", "agent_id": "twitter-alt", "tags": []})
    assert scalar(conn, b"select count(*) from public.ops_agent_reactions") == 0
    rpc(api, "ops_emit_event", event={"type": "tweet:posted", "agent_id": "twitter-alt", "tags": ["viral"]})
    assert rows(conn, b"select target_agent, reaction_type, step_kind from public.ops_agent_reactions") == [
        ("growth", "analyze", "analyze")
    ]


# --- proposals and gates -------------------------------------------------------------------------------------


def test_auto_approved_proposal_creates_mission_first_step_queued_rest_pending(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    result = propose(api, [step("crawl", {"url": "u"}), step("analyze"), step("write_content")])
    assert result["status"] == "accepted"
    assert result["duplicate"] is False
    assert mission_status(conn, result["mission_id"]) == "approved"
    assert [(s["position"], s["status"]) for s in step_rows(conn, result["mission_id"])] == [
        (0, "queued"),
        (1, "pending"),
        (2, "pending"),
    ]


def test_not_auto_approved_stays_pending_then_human_approves(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    result = propose(api, [step("post_tweet", {"text": "hi"})], agent_id="twitter-alt")
    assert result["status"] == "pending"
    assert result["mission_id"] is None
    assert scalar(conn, b"select count(*) from public.ops_mission_steps") == 0
    approved = rpc(api, "ops_approve_proposal", proposal_id=result["proposal_id"], decided_by="alice")
    assert approved["status"] == "accepted"
    assert approved["mission_id"] is not None
    assert [s["status"] for s in step_rows(conn, approved["mission_id"])] == ["queued"]
    assert (
        scalar(conn, b"select decided_by from public.ops_mission_proposals where id = %s", [result["proposal_id"]])
        == "alice"
    )


def test_human_reject_stores_reason_and_warning_event(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    result = propose(api, [step("post_tweet")], agent_id="twitter-alt")
    rejected = rpc(api, "ops_reject_proposal", proposal_id=result["proposal_id"], reason="off-brand", decided_by="bob")
    assert rejected["status"] == "rejected"
    assert row(
        conn,
        b"select status, rejection_reason from public.ops_mission_proposals where id = %s",
        [result["proposal_id"]],
    ) == ("rejected", "off-brand")
    [event] = events(conn, "proposal:rejected", proposal_id=result["proposal_id"])
    assert "warning" in event["tags"]
    assert scalar(conn, b"select count(*) from public.ops_missions") == 0


def test_approval_reruns_the_gates(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """Approval re-runs the gates (docs/architecture.md, invariant 4) and may end as rejected with the reason."""
    update_policy(api, "step_kind_gates", post_tweet={"daily_limit": 1})
    first = propose(api, [step("post_tweet")], agent_id="twitter-alt", title="one")
    second = propose(api, [step("post_tweet")], agent_id="twitter-alt", title="two")
    assert (first["status"], second["status"]) == ("pending", "pending")
    assert rpc(api, "ops_approve_proposal", proposal_id=first["proposal_id"], decided_by="a")["status"] == "accepted"
    late = rpc(api, "ops_approve_proposal", proposal_id=second["proposal_id"], decided_by="a")
    assert late["status"] == "rejected"
    assert late["reason"]
    assert late["mission_id"] is None
    assert scalar(conn, b"select count(*) from public.ops_mission_steps where kind = 'post_tweet'") == 1
    assert "warning" in events(conn, "proposal:rejected", proposal_id=second["proposal_id"])[0]["tags"]


def test_disabled_kind_gate_rejects_with_reason_and_nothing_reaches_the_queue(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    """Seed default: deploy {"enabled": false}. 'Rejected: stored with its reason and a proposal:rejected event tagged
    warning; nothing reaches the step queue'."""
    result = propose(api, [step("crawl"), step("deploy")])
    assert result["status"] == "rejected"
    assert result["reason"]
    assert result["mission_id"] is None
    stored = row(
        conn,
        b"select status, rejection_reason from public.ops_mission_proposals where id = %s",
        [result["proposal_id"]],
    )
    assert stored == ("rejected", result["reason"])
    assert scalar(conn, b"select count(*) from public.ops_mission_steps") == 0
    [event] = events(conn, "proposal:rejected", proposal_id=result["proposal_id"])
    assert "warning" in event["tags"]


def test_per_agent_daily_proposal_limit(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    set_policy(api, "daily_proposal_limit", {"limit": 100, "per_agent": {"spammer": 2}})
    results = [propose(api, agent_id="spammer", title=f"p{i}")["status"] for i in range(3)]
    assert results == ["accepted", "accepted", "rejected"]
    assert propose(api, agent_id="polite")["status"] == "accepted"


def test_cap_gate_does_not_count_steps_of_cancelled_missions(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """step_kind_gates 'counts steps of that kind created since UTC midnight in missions that are not cancelled'."""
    update_policy(api, "step_kind_gates", post_tweet={"daily_limit": 2})
    allowed = get_policy(api, "auto_approve")["allowed_step_kinds"]
    update_policy(api, "auto_approve", allowed_step_kinds=[*allowed, "post_tweet"])
    first = propose(api, [step("post_tweet")], agent_id="twitter-alt")
    assert propose(api, [step("post_tweet")], agent_id="twitter-alt")["status"] == "accepted"
    assert propose(api, [step("post_tweet")], agent_id="twitter-alt")["status"] == "rejected"
    rpc(api, "ops_cancel_mission", mission_id=first["mission_id"], reason="changed my mind")
    assert propose(api, [step("post_tweet")], agent_id="twitter-alt")["status"] == "accepted"


def test_max_active_missions_gate(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    set_policy(api, "max_active_missions", {"limit": 1})
    assert propose(api, title="one")["status"] == "accepted"
    second = propose(api, title="two")
    assert second["status"] != "accepted"
    assert second["mission_id"] is None
    assert scalar(conn, b"select count(*) from public.ops_missions") == 1


def test_dedupe_key_returns_first_result_and_writes_nothing(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    first = propose(api, [step("crawl")], dedupe_key="k-1")
    before = snapshot(conn)
    again = propose(api, [step("analyze")], title="different", dedupe_key="k-1")
    assert again["duplicate"] is True
    assert {k: again[k] for k in ("proposal_id", "status", "mission_id")} == {
        k: first[k] for k in ("proposal_id", "status", "mission_id")
    }
    assert snapshot(conn) == before


# --- kill switch and per-kind disable ------------------------------------------------------------------------


def test_kill_switch_stops_proposals_and_claims(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    queued = propose(api)
    set_policy(api, "system", {"enabled": False})
    refused = propose(api, title="while off")
    assert refused["status"] == "rejected"
    assert refused["reason"]
    assert refused["mission_id"] is None
    assert scalar(conn, b"select count(*) from public.ops_missions") == 1
    assert claim(api, max_steps=10) == []
    assert step_rows(conn, queued["mission_id"])[0]["status"] == "queued"
    set_policy(api, "system", {"enabled": True})
    assert [s["mission_id"] for s in claim(api, max_steps=10)] == [queued["mission_id"]]


def test_per_kind_disable_flag_stops_claiming_that_kind(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    crawl = propose(api, [step("crawl")])
    analyze = propose(api, [step("analyze")])
    set_policy(api, "worker:crawl", {"enabled": False})
    got = claim(api, max_steps=10)
    assert [s["kind"] for s in got] == ["analyze"]
    assert got[0]["mission_id"] == analyze["mission_id"]
    assert claim(api, kinds=["crawl"], max_steps=10) == []
    set_policy(api, "worker:crawl", {"enabled": True})
    assert [s["mission_id"] for s in claim(api, kinds=["crawl"])] == [crawl["mission_id"]]


# --- claiming ------------------------------------------------------------------------------------------------


def test_claim_returns_contract_fields_and_sets_reservation(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    created = propose(api, [step("crawl", {"url": "https://example.com"})])
    before = _now(conn)
    [item] = claim(api, worker_id="vps-1")
    for field in ("id", "mission_id", "kind", "payload", "attempt", "lease_expires_at", "inputs"):
        assert field in item, field
    assert item["mission_id"] == created["mission_id"]
    assert item["kind"] == "crawl"
    assert item["payload"] == {"url": "https://example.com"}
    assert item["attempt"] == 1
    assert item["inputs"] == {}
    lease = datetime.fromisoformat(item["lease_expires_at"])
    # Default lease = 30 minutes, from the worker_policy of supabase/seed.sql.
    assert timedelta(minutes=29) < lease - before < timedelta(minutes=31)
    status, attempt, reserved_by, reserved_at, lease_at = row(
        conn,
        b"select status, attempt, reserved_by, reserved_at, lease_expires_at from public.ops_mission_steps"
        b" where id = %s",
        [item["id"]],
    )
    assert (status, attempt, reserved_by) == ("running", 1, "vps-1")
    assert reserved_at is not None
    assert lease_at == lease
    assert mission_status(conn, created["mission_id"]) == "running"
    assert claim(api) == []


def test_claim_honours_kinds_run_after_priority_and_lease_seconds(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    low = propose(api, [step("crawl")], title="low")
    high = propose(api, [step("crawl")], title="high")
    later = propose(api, [step("crawl")], title="later")
    other = propose(api, [step("analyze")], title="other kind")
    conn.execute("update public.ops_mission_steps set priority = 10 where mission_id = %s", [high["mission_id"]])
    conn.execute(
        "update public.ops_mission_steps set run_after = now() + interval '1 hour' where mission_id = %s",
        [later["mission_id"]],
    )
    before = _now(conn)
    first = claim(api, kinds=["crawl"], lease_seconds=120)
    assert [s["mission_id"] for s in first] == [high["mission_id"]]
    assert (
        timedelta(seconds=110) < datetime.fromisoformat(first[0]["lease_expires_at"]) - before < timedelta(seconds=130)
    )
    rest = claim(api, kinds=["crawl"], max_steps=10)
    assert [s["mission_id"] for s in rest] == [low["mission_id"]]
    assert [s["mission_id"] for s in claim(api, kinds=["analyze"], max_steps=10)] == [other["mission_id"]]


def test_default_lease_comes_from_worker_policy_with_per_kind_overrides(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    """'worker_policy (stale/lease seconds, max_attempts, backoff ...; per-kind overrides)'."""
    update_policy(api, "worker_policy", lease_seconds=300, kinds={"analyze": {"lease_seconds": 60}})
    propose(api, [step("crawl")])
    propose(api, [step("analyze")])
    before = _now(conn)
    leases = {s["kind"]: datetime.fromisoformat(s["lease_expires_at"]) - before for s in claim(api, max_steps=2)}
    assert timedelta(seconds=290) < leases["crawl"] < timedelta(seconds=310), leases
    assert timedelta(seconds=50) < leases["analyze"] < timedelta(seconds=70), leases


def test_claim_uses_the_partial_index(db_url: str, conn: psycopg.Connection) -> None:
    """'Claim: one statement, CTE + FOR UPDATE SKIP LOCKED ... Uses the partial index (check with EXPLAIN)'."""
    with service(db_url) as api:
        set_policy(api, "max_active_missions", {"limit": 1000})
        host = propose(api, [step("crawl")], title="host")
        for i in range(20):
            propose(api, [step(["crawl", "analyze"][i % 2])], title=f"q{i}")
    conn.execute("set session_replication_role = replica")
    conn.execute(
        "insert into public.ops_mission_steps (mission_id, position, kind, status, output, attempt, finished_at)"
        " select %s, 100 + g, (array['crawl','analyze','write_content'])[1 + g %% 3], 'succeeded', '{}', 1, now()"
        " from generate_series(1, 5000) g",
        [host["mission_id"]],
    )
    conn.execute("set session_replication_role = origin")
    conn.execute("analyze public.ops_mission_steps")

    with psycopg.connect(db_url, autocommit=True) as explained:
        notices: list[str] = []
        explained.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        explained.execute("load 'auto_explain'")
        explained.execute("set auto_explain.log_min_duration = 0")
        explained.execute("set auto_explain.log_nested_statements = on")
        explained.execute("set auto_explain.log_level = notice")
        explained.execute("set role service_role")
        assert len(claim(explained, max_steps=3)) == 3
        assert len(claim(explained, kinds=["analyze"], max_steps=2)) == 2

    claim_plans = [n for n in notices if re.search(r"skip\s+locked", n, re.IGNORECASE) and "ops_mission_steps" in n]
    assert claim_plans, "no plan of a FOR UPDATE SKIP LOCKED statement on ops_mission_steps was logged"
    for plan in claim_plans:
        assert "ops_mission_steps_claim_idx" in plan, plan
        assert "Seq Scan on ops_mission_steps" not in plan, plan


def test_notify_when_a_step_becomes_queued(db_url: str, conn: psycopg.Connection) -> None:
    """'A step becoming queued sends pg_notify('ops_steps', kind)'."""
    with psycopg.connect(db_url, autocommit=True) as listener, service(db_url) as api:
        listener.execute("listen ops_steps")
        created = propose(api, [step("crawl"), step("analyze")])
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0)]
        assert got == [("ops_steps", "crawl")]  # the pending analyze step is not announced yet
        [item] = claim(api)
        complete(api, item["id"], item["attempt"], {"ok": True})
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0)]
        assert got == [("ops_steps", "analyze")]
        assert step_rows(conn, created["mission_id"])[1]["status"] == "queued"


def test_notify_when_a_failed_step_is_queued_for_retry(db_url: str) -> None:
    """A retry moves the step back to queued, so 'A step becoming queued sends pg_notify' applies too."""
    with psycopg.connect(db_url, autocommit=True) as listener, service(db_url) as api:
        propose(api, [step("crawl")])
        [item] = claim(api)
        listener.execute("listen ops_steps")
        assert fail(api, item["id"], item["attempt"], "flaky")["status"] == "queued"
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0)]
        assert got == [("ops_steps", "crawl")]


# --- dependencies --------------------------------------------------------------------------------------------


def test_default_order_is_sequential_and_inputs_carry_the_previous_output(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    created = propose(api, [step("crawl"), step("analyze"), step("write_content")])
    mission_id = created["mission_id"]
    outputs: list[dict[str, Any]] = [{"pages": 3}, {"summary": "s"}, {"doc": "d"}]
    for position in range(3):
        batch = claim(api, max_steps=10)
        assert [s["position"] for s in batch] == [position]
        expected_inputs = {} if position == 0 else {str(position - 1): outputs[position - 1]}
        assert batch[0]["inputs"] == expected_inputs
        result = complete(api, batch[0]["id"], batch[0]["attempt"], outputs[position])
        assert result["status"] == "succeeded"
    assert mission_status(conn, mission_id) == "succeeded"
    assert [e["type"] for e in events(conn, mission_id=mission_id) if e["type"].startswith("mission:")] == [
        "mission:approved",
        "mission:running",
        "mission:succeeded",
    ]


def test_depends_on_allows_parallel_branches_and_joins(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    created = propose(
        api,
        [
            step("crawl"),  # 0
            step("analyze", depends_on=[0]),  # 1
            step("write_content", depends_on=[0]),  # 2
            step("crawl", {"join": True}, depends_on=[1, 2]),  # 3
            step("analyze", {"independent": True}, depends_on=[]),  # 4
        ],
    )
    mission_id = created["mission_id"]

    def statuses() -> list[str]:
        return [s["status"] for s in step_rows(conn, mission_id)]

    assert statuses() == ["queued", "pending", "pending", "pending", "queued"]

    first = {s["position"]: s for s in claim(api, max_steps=10)}
    assert set(first) == {0, 4}
    complete(api, first[0]["id"], 1, {"a": 1})
    assert statuses()[:4] == ["succeeded", "queued", "queued", "pending"]

    branches = {s["position"]: s for s in claim(api, max_steps=10)}
    assert set(branches) == {1, 2}
    assert branches[1]["inputs"] == {"0": {"a": 1}}
    assert branches[2]["inputs"] == {"0": {"a": 1}}
    complete(api, branches[1]["id"], 1, {"b": 2})
    assert statuses()[3] == "pending"  # still waiting for position 2
    assert claim(api, max_steps=10) == []
    complete(api, branches[2]["id"], 1, {"c": 3})
    assert statuses()[3] == "queued"
    [join] = claim(api, max_steps=10)
    assert join["position"] == 3
    assert join["inputs"] == {"1": {"b": 2}, "2": {"c": 3}}
    complete(api, join["id"], 1)
    assert mission_status(conn, mission_id) == "running"
    result = complete(api, first[4]["id"], 1)
    assert result["mission_status"] == "succeeded"
    assert mission_status(conn, mission_id) == "succeeded"


# --- failures and retries ------------------------------------------------------------------------------------


def test_retry_with_exponential_backoff_then_fails_for_good(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'retryable and attempts left -> back to queued with exponential backoff plus jitter (step:retrying);
    otherwise failed and the mission is finalized'."""
    update_policy(api, "worker_policy", max_attempts=3, backoff_base_seconds=30, backoff_max_seconds=3600)
    created = propose(api, [step("crawl"), step("analyze")])
    mission_id = created["mission_id"]
    delays: list[float] = []
    for attempt in (1, 2):
        [item] = claim(api, kinds=["crawl"])
        assert item["attempt"] == attempt
        at = _now(conn)
        result = fail(api, item["id"], attempt, f"timeout {attempt}")
        assert result["status"] == "queued"
        stored = step_rows(conn, mission_id)[0]
        assert stored["status"] == "queued"
        assert stored["last_error"] == f"timeout {attempt}"
        delays.append((stored["run_after"] - at).total_seconds())
        assert claim(api, kinds=["crawl"]) == []  # not before run_after
        retrying = events(conn, "step:retrying", step_id=item["id"])
        assert len(retrying) == attempt
        conn.execute("update public.ops_mission_steps set run_after = now() where id = %s", [item["id"]])
    assert delays[0] >= 29, delays
    assert delays[1] >= 59, delays
    assert all(d <= 2 * 3600 for d in delays), delays

    [item] = claim(api, kinds=["crawl"])
    assert item["attempt"] == 3
    result = fail(api, item["id"], 3, "timeout 3")
    assert result["status"] == "failed"
    assert result["mission_status"] == "failed"
    assert [s["status"] for s in step_rows(conn, mission_id)] == ["failed", "cancelled"]
    assert len(events(conn, "mission:failed", mission_id=mission_id)) == 1


def test_permanent_failure_cancels_remaining_steps_and_fails_the_mission(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    created = propose(
        api,
        [
            step("crawl"),
            step("analyze", depends_on=[0]),
            step("write_content", depends_on=[0]),
            step("crawl", depends_on=[1, 2]),
        ],
    )
    mission_id = created["mission_id"]
    [first] = claim(api)
    complete(api, first["id"], 1)
    [branch] = claim(api, kinds=["analyze"])
    result = fail(api, branch["id"], branch["attempt"], "bad data", retryable=False)
    assert (result["status"], result["mission_status"]) == ("failed", "failed")
    assert [s["status"] for s in step_rows(conn, mission_id)] == ["succeeded", "failed", "cancelled", "cancelled"]
    status, reason, finalized_at = row(
        conn, b"select status, failure_reason, finalized_at from public.ops_missions where id = %s", [mission_id]
    )
    assert status == "failed"
    assert reason
    assert finalized_at is not None
    assert len(events(conn, "mission:failed", mission_id=mission_id)) == 1
    assert claim(api, max_steps=10) == []


def test_idempotent_repeat_of_the_same_completion(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'Repeating the same completion for the same attempt returns success again (safe to retry after a lost
    response).'"""
    created = propose(api, [step("crawl"), step("analyze")])
    [item] = claim(api)
    first = complete(api, item["id"], item["attempt"], {"pages": 2})
    before = snapshot(conn)
    again = complete(api, item["id"], item["attempt"], {"pages": 2})
    assert again["status"] == "succeeded"
    assert again["step_id"] == item["id"]
    assert again["mission_id"] == created["mission_id"] == first["mission_id"]
    assert snapshot(conn) == before


def test_finalize_is_idempotent_and_cancel_cancels_open_steps(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    done = propose(api, [step("crawl")])
    [item] = claim(api)
    complete(api, item["id"], 1)
    first = rpc(api, "ops_finalize_mission", mission_id=done["mission_id"])
    second = rpc(api, "ops_finalize_mission", mission_id=done["mission_id"])
    assert first["status"] == second["status"] == "succeeded"
    assert first["finalized_at"] == second["finalized_at"]
    assert len(events(conn, "mission:succeeded", mission_id=done["mission_id"])) == 1

    open_mission = propose(api, [step("crawl"), step("analyze")])
    cancelled = rpc(api, "ops_cancel_mission", mission_id=open_mission["mission_id"], reason="not needed")
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in step_rows(conn, open_mission["mission_id"])] == ["cancelled", "cancelled"]
    assert len(events(conn, "mission:cancelled", mission_id=open_mission["mission_id"])) == 1
    assert claim(api, max_steps=10) == []


# --- leases, fencing and stale recovery ----------------------------------------------------------------------


def test_late_completion_after_stale_recovery_is_refused_and_changes_nothing(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    created = propose(api, [step("crawl"), step("analyze")])
    [item] = claim(api, worker_id="slow-worker")
    # Make the step look abandoned for 31 minutes (the lease is supabase/seed.sql's 30 minutes).
    conn.execute(
        "update public.ops_mission_steps set reserved_at = reserved_at - interval '31 minutes',"
        " lease_renewed_at = lease_renewed_at - interval '31 minutes', started_at = started_at - interval '31 minutes',"
        " lease_expires_at = now() - interval '1 minute' where id = %s",
        [item["id"]],
    )
    recovered = rpc(api, "ops_recover_stale_steps")
    assert recovered["recovered"] == 1
    assert recovered["requeued"] == 1
    stored = step_rows(conn, created["mission_id"])[0]
    assert stored["status"] == "queued"
    match = re.fullmatch(r"Stale: no progress for (\d+) minutes", stored["last_error"] or "")
    assert match, stored["last_error"]
    assert 30 <= int(match.group(1)) <= 32
    assert len(events(conn, "step:recovered", step_id=item["id"])) == 1

    before = snapshot(conn)
    error = rpc_error(api, "ops_complete_step", step_id=item["id"], attempt=item["attempt"], output={"late": True})
    assert error.sqlstate == "PT409", message(error)
    error = rpc_error(api, "ops_fail_step", step_id=item["id"], attempt=item["attempt"], error="late")
    assert error.sqlstate == "PT409", message(error)
    assert snapshot(conn) == before

    # The step is retried at attempt 2; the old worker still cannot complete it, the new one can.
    conn.execute("update public.ops_mission_steps set run_after = now() where id = %s", [item["id"]])
    [again] = claim(api, worker_id="fresh-worker")
    assert (again["id"], again["attempt"]) == (item["id"], 2)
    error = rpc_error(api, "ops_complete_step", step_id=item["id"], attempt=1, output={"late": True})
    assert error.sqlstate == "PT409"
    assert complete(api, item["id"], 2, {"fresh": True})["status"] == "succeeded"
    assert scalar(conn, b"select output from public.ops_mission_steps where id = %s", [item["id"]]) == {"fresh": True}


def test_stale_recovery_out_of_attempts_fails_and_finalizes_the_mission(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    update_policy(api, "worker_policy", max_attempts=1)
    created = propose(api, [step("crawl"), step("analyze")])
    [item] = claim(api)
    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s", [item["id"]]
    )
    result = rpc(api, "ops_recover_stale_steps")
    assert (result["recovered"], result["failed"]) == (1, 1), result
    assert [s["status"] for s in step_rows(conn, created["mission_id"])] == ["failed", "cancelled"]
    assert mission_status(conn, created["mission_id"]) == "failed"
    assert len(events(conn, "mission:failed", mission_id=created["mission_id"])) == 1


def test_stale_recovery_leaves_live_leases_alone_and_is_batch_capped(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    update_policy(api, "heartbeat", recovery_batch=3)
    set_policy(api, "max_active_missions", {"limit": 100})
    for i in range(6):
        propose(api, [step("crawl")], title=f"m{i}")
    claimed = claim(api, max_steps=6)
    stale = [s["id"] for s in claimed[:5]]
    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = any(%s)",
        [stale],
    )
    first = rpc(api, "ops_recover_stale_steps")
    second = rpc(api, "ops_recover_stale_steps")
    assert first["recovered"] == 3
    assert second["recovered"] == 2
    assert scalar(conn, b"select status from public.ops_mission_steps where id = %s", [claimed[5]["id"]]) == "running"


def test_extend_lease_is_fenced_by_attempt(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    propose(api, [step("crawl")])
    [item] = claim(api, lease_seconds=60)
    before = _now(conn)
    extended = rpc(api, "ops_extend_lease", step_id=item["id"], attempt=item["attempt"], lease_seconds=600)
    new_lease = datetime.fromisoformat(extended["lease_expires_at"])
    assert timedelta(seconds=590) < new_lease - before < timedelta(seconds=610)
    assert (
        scalar(conn, b"select lease_expires_at from public.ops_mission_steps where id = %s", [item["id"]]) == new_lease
    )

    state = snapshot(conn)
    error = rpc_error(api, "ops_extend_lease", step_id=item["id"], attempt=item["attempt"] + 1, lease_seconds=600)
    assert error.sqlstate == "PT409"
    assert snapshot(conn) == state

    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s", [item["id"]]
    )
    rpc(api, "ops_recover_stale_steps")
    state = snapshot(conn)
    error = rpc_error(api, "ops_extend_lease", step_id=item["id"], attempt=item["attempt"], lease_seconds=600)
    assert error.sqlstate == "PT409"
    assert snapshot(conn) == state


# --- events --------------------------------------------------------------------------------------------------


def test_events_carry_type_parts_kind_agent_and_ids(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'tags always contain the type itself, its two parts and the step kind where there is one ... agent_id and
    ids are filled in.'"""
    set_policy(api, "max_active_missions", {"limit": 100})
    ok = propose(api, [step("crawl"), step("analyze"), step("write_content")], agent_id="scout")
    [s1] = claim(api)
    complete(api, s1["id"], 1)
    [s2] = claim(api)
    fail(api, s2["id"], 1, "flaky")
    conn.execute("update public.ops_mission_steps set run_after = now() where id = %s", [s2["id"]])
    [s2] = claim(api)
    fail(api, s2["id"], 2, "fatal", retryable=False)
    propose(api, [step("deploy")], agent_id="shipper")  # rejected by the gate
    stale = propose(api, [step("crawl")], agent_id="sleepy")
    [s3] = claim(api)
    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s", [s3["id"]]
    )
    rpc(api, "ops_recover_stale_steps")
    emitted = rpc(api, "ops_emit_event", event={"type": "tweet:posted", "agent_id": "twitter-alt", "tags": ["viral"]})
    assert {"tweet:posted", "tweet", "posted", "viral"} <= set(emitted["tags"])

    all_events = events(conn)
    types = {e["type"] for e in all_events}
    for expected in (
        "proposal:created",
        "proposal:accepted",
        "proposal:rejected",
        "mission:approved",
        "mission:running",
        "mission:failed",
        "step:queued",
        "step:pending",
        "step:running",
        "step:succeeded",
        "step:retrying",
        "step:failed",
        "step:cancelled",
        "step:recovered",
        "tweet:posted",
    ):
        assert expected in types, expected
    kinds = dict(rows(conn, b"select id, kind from public.ops_mission_steps"))
    for event in all_events:
        entity, status = event["type"].split(":")
        assert {event["type"], entity, status} <= set(event["tags"]), event
        if entity in ("proposal", "mission", "step"):
            assert event["agent_id"] not in (None, "", "system"), event
        if entity == "proposal":
            assert event["proposal_id"] is not None, event
        if entity == "mission":
            assert event["mission_id"] is not None, event
        if entity == "step":
            assert event["step_id"] is not None, event
            assert event["mission_id"] is not None, event
            assert kinds[event["step_id"]] in event["tags"], event
    assert {e["agent_id"] for e in events(conn, mission_id=ok["mission_id"])} == {"scout"}
    assert {e["agent_id"] for e in events(conn, mission_id=stale["mission_id"])} == {"sleepy"}


# --- triggers ------------------------------------------------------------------------------------------------


def _enable_rule(owner: psycopg.Connection, name: str) -> int:
    rule_id: int = scalar(
        owner,
        b"update public.ops_trigger_rules set enabled = true, skip_probability = 0, jitter_minutes = 0"
        b" where name = %s returning id",
        [name],
    )
    return rule_id


def test_event_trigger_mission_failed_proposes_a_diagnosis_once(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    rule_id = _enable_rule(conn, "mission_failed")
    failed = _fail_mission(api)
    result = rpc(api, "ops_evaluate_triggers")
    assert result["fired"] == 1, result
    proposal = row(
        conn,
        b"select agent_id, title, source, dedupe_key, proposed_steps from public.ops_mission_proposals"
        b" where source = 'trigger'",
    )
    agent_id, title, source, dedupe_key, proposed = proposal
    assert (agent_id, source) == ("brain", "trigger")
    assert title == f"Diagnose failed mission #{failed}"
    assert dedupe_key
    assert str(proposed[0]["payload"]["mission_id"]) == str(failed)
    fire_count, last_fired_at = row(
        conn, b"select fire_count, last_fired_at from public.ops_trigger_rules where id = %s", [rule_id]
    )
    assert fire_count == 1
    assert last_fired_at is not None
    [fired] = events(conn, "trigger:fired")
    assert {"trigger:fired", "trigger", "fired"} <= set(fired["tags"])
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 0
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals where source = 'trigger'") == 1


def test_trigger_cooldown_is_checked_first(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'Cooldown is checked first': a second failure inside the rule's 60-minute cooldown proposes nothing."""
    rule_id = _enable_rule(conn, "mission_failed")
    _fail_mission(api, agent_id="scout")
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 1
    _fail_mission(api, agent_id="other")
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 0
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals where source = 'trigger'") == 1
    assert scalar(conn, b"select fire_count from public.ops_trigger_rules where id = %s", [rule_id]) == 1


def test_schedule_trigger_fires_every_cooldown_with_rotating_topics(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    rule_id = _enable_rule(conn, "proactive_research")
    at = _now(conn)
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 1
    next_due = scalar(conn, b"select next_due_at from public.ops_trigger_rules where id = %s", [rule_id])
    assert timedelta(minutes=359) <= next_due - at <= timedelta(minutes=361)
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 0  # not due yet
    conn.execute(
        "update public.ops_trigger_rules set next_due_at = now() - interval '1 second',"
        " last_fired_at = now() - interval '7 hours' where id = %s",
        [rule_id],
    )
    assert rpc(api, "ops_evaluate_triggers")["fired"] == 1
    titles = [r[0] for r in rows(conn, b"select title from public.ops_mission_proposals order by id")]
    topics = ["agent architectures", "pricing", "retention"]
    assert len(titles) == 2
    assert all(t.removeprefix("Research: ") in topics for t in titles), titles
    assert titles[0] != titles[1], titles
    assert scalar(conn, b"select fire_count from public.ops_trigger_rules where id = %s", [rule_id]) == 2


def test_schedule_trigger_skip_probability(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    rule_id = _enable_rule(conn, "proactive_research")
    conn.execute("update public.ops_trigger_rules set skip_probability = 1 where id = %s", [rule_id])
    result = rpc(api, "ops_evaluate_triggers")
    assert result["fired"] == 0
    assert result["skipped"] == 1
    assert scalar(conn, b"select count(*) from public.ops_mission_proposals") == 0


def test_threshold_trigger_fires_when_the_value_is_crossed(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    _enable_rule(conn, "tweet_high_engagement")
    for tweet_id, engagement_rate, fired in (("t-low", 0.01, 0), ("t-hi", 0.08, 1)):
        payload = {"tweet_id": tweet_id, "engagement_rate": engagement_rate}
        rpc(api, "ops_emit_event", event={"type": "tweet:metrics", "agent_id": "twitter-alt", "payload": payload})
        assert rpc(api, "ops_evaluate_triggers")["fired"] == fired
    assert rows(conn, b"select title, source from public.ops_mission_proposals") == [
        ("Why did tweet t-hi go viral?", "trigger")
    ]


def test_absence_trigger_fires_only_without_a_recent_event(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    template = {"agent_id": "observer", "title": "Nothing about {{x}}", "steps": [{"kind": "analyze"}]}
    for name, event_type in (("quiet_never", "zz:never"), ("quiet_seen", "zz:seen")):
        conn.execute(
            "insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config, enabled)"
            " values (%s, 'absence', %s, %s, true)",
            [
                name,
                psycopg.types.json.Jsonb({"event_type": event_type, "lookback_minutes": 60}),
                psycopg.types.json.Jsonb(template),
            ],
        )
    rpc(api, "ops_emit_event", event={"type": "zz:seen", "agent_id": "observer"})
    result = rpc(api, "ops_evaluate_triggers")
    assert result["fired"] == 1, result
    assert dict(
        rows(conn, b"select name, fire_count from public.ops_trigger_rules where trigger_event = 'absence'")
    ) == {
        "quiet_never": 1,
        "quiet_seen": 0,
    }


# --- heartbeat -----------------------------------------------------------------------------------------------


def test_heartbeat_records_one_action_run_per_run_with_the_returned_json(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    results = [rpc(api, "ops_heartbeat") for _ in range(3)]
    runs = rows(
        conn,
        b"select id, status, result, duration_ms, finished_at from public.ops_action_runs"
        b" where action = 'heartbeat' order by id",
    )
    assert len(runs) == 3
    for returned, (run_id, status, stored, duration_ms, finished_at) in zip(results, runs, strict=True):
        assert status == "succeeded"
        assert finished_at is not None
        assert duration_ms is not None
        assert returned["run_id"] == run_id
        assert returned["duration_ms"] == duration_ms
        for task in ("recovery", "triggers", "reactions", "retention", "errors"):
            assert returned[task] == stored[task], task
        assert returned["errors"] == []


def test_heartbeat_is_single_flight(db_url: str, conn: psycopg.Connection) -> None:
    """'Single-flight: a concurrent call returns {"skipped": "busy"} at once.'"""
    with psycopg.connect(db_url) as holder, service(db_url) as api:
        holder.execute("set role service_role")
        first = rpc(holder, "ops_heartbeat")  # its transaction stays open
        assert "skipped" not in first
        api.execute("set statement_timeout = '5s'")
        started = time.monotonic()
        second = rpc(api, "ops_heartbeat")
        elapsed = time.monotonic() - started
        holder.rollback()
    assert second == {"skipped": "busy"}
    assert elapsed < 2


def test_heartbeat_runs_recovery_triggers_and_retention(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    # A stale step, a due trigger and an old event: one heartbeat handles all three.
    propose(api, [step("crawl")])
    [item] = claim(api)
    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s", [item["id"]]
    )
    _enable_rule(conn, "proactive_analyze_ops")
    old = rpc(api, "ops_emit_event", event={"type": "note:old", "agent_id": "observer"})
    conn.execute("set session_replication_role = replica")
    conn.execute(
        "update public.ops_agent_events set created_at = now() - interval '40 days' where id = %s", [old["event_id"]]
    )
    conn.execute("set session_replication_role = origin")
    result = rpc(api, "ops_heartbeat")
    assert result["recovery"]["recovered"] == 1, result
    assert result["triggers"]["fired"] == 1, result
    assert result["retention"]["events"] >= 1, result
    assert scalar(conn, b"select count(*) from public.ops_agent_events where id = %s", [old["event_id"]]) == 0
    assert scalar(conn, b"select count(*) from public.ops_agent_events where type = 'step:recovered'") == 1


def test_heartbeat_one_failing_part_does_not_stop_the_others(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'each in its own exception block so one failure does not stop the others ... records ... errors'."""
    propose(api, [step("crawl")])
    [item] = claim(api)
    conn.execute(
        "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s",
        [item["id"]],
    )
    # A due rule whose template is not a valid proposal (no steps): firing it must fail.
    conn.execute(
        "insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config, enabled)"
        " values ('broken', 'schedule', '{}', '{\"agent_id\": \"observer\", \"title\": \"broken\"}', true)"
    )
    result = rpc(api, "ops_heartbeat")
    assert result["recovery"]["recovered"] == 1, result
    assert "retention" in result
    assert result["errors"] or result["triggers"].get("errors"), result
    [(stored,)] = rows(conn, b"select result from public.ops_action_runs where action = 'heartbeat'")
    assert stored["errors"] or stored["triggers"].get("errors"), stored
    assert scalar(conn, b"select status from public.ops_mission_steps where id = %s", [item["id"]]) == "queued"


def test_stale_recovery_skips_a_step_that_is_being_completed(db_url: str, conn: psycopg.Connection) -> None:
    """'capped batch, SKIP LOCKED, and the UPDATE re-checks status and attempt so a step that completed meanwhile is
    never overwritten'."""
    with service(db_url) as api, psycopg.connect(db_url) as worker:
        propose(api, [step("crawl")])
        [item] = claim(api)
        conn.execute(
            "update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = %s",
            [item["id"]],
        )
        worker.execute("set role service_role")
        done = complete(worker, item["id"], item["attempt"], {"just": "in time"})  # transaction still open
        assert done["status"] == "succeeded"
        api.execute("set lock_timeout = '3s'")
        recovered = rpc(api, "ops_recover_stale_steps")
        worker.commit()
    assert recovered["recovered"] == 0, recovered
    status, output, attempt = row(
        conn, b"select status, output, attempt from public.ops_mission_steps where id = %s", [item["id"]]
    )
    assert (status, output, attempt) == ("succeeded", {"just": "in time"}, 1)
    assert events(conn, "step:recovered") == []
