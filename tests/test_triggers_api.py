"""Trigger rules through the API: `Ops` over both transports (direct psycopg and PostgREST), against real Postgres.

The SQL itself (every validation, event and read) is proven by supabase/tests/5x_triggers_*_test.sql; here the
client's methods and models, the heartbeat firing a rule written through the API, refusals as the client's
exceptions, writers racing for one name, and a dry run that writes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from agent_ops import InvalidInput, NotFound, Ops
from agent_ops.models import TRIGGER_RULE_FIELDS, TriggerRule
from tests.kit.contract import rpc, service, snapshot
from tests.kit.database import scalar

RULE: dict[str, Any] = {
    "name": "every-failure",
    "trigger_event": "event",
    "conditions": {"event_type": "mission:failed", "lookback_minutes": 30},
    "action_config": {
        "agent_id": "brain",
        "title": "Diagnose mission #{{event.mission_id}}",
        "steps": [{"kind": "analyze", "payload": {"mission_id": "{{event.mission_id}}"}}],
    },
    "cooldown_minutes": 0,
}


def events(conn: psycopg.Connection, prefix: str = "trigger:") -> list[tuple[str, str]]:
    return [
        (row[0], row[1])
        for row in conn.execute(
            "select type, payload ->> 'updated_by' from ops_agent_events where type like %s and type <> 'trigger:fired'"
            " order by id",
            (prefix + "%",),
        )
    ]


def fail_a_mission(ops: Ops) -> int:
    mission = ops.propose("growth", "doomed", [{"kind": "crawl"}]).mission_id
    assert mission is not None
    [claimed] = ops.claim("w", ["crawl"])
    ops.fail(claimed.id, claimed.attempt, "HTTP 500", retryable=False)
    return mission


def test_a_rule_is_written_switched_fired_and_deleted_through_the_client(ops: Ops, conn: psycopg.Connection) -> None:
    created = ops.set_trigger_rule(RULE, "ada")
    assert (created.action, created.rule.name, created.rule.enabled) == ("created", "every-failure", False)
    assert created.rule.definition() == {**RULE, "skip_probability": 0, "jitter_minutes": 0, "enabled": False}
    assert set(TRIGGER_RULE_FIELDS) == set(created.changed)
    assert ops.set_trigger_rule(created.rule.definition(), "ada").action == "unchanged", "a round trip changes nothing"

    switched = ops.set_trigger_enabled("every-failure", True, "bob")
    assert (switched.action, switched.changed, switched.rule.enabled, switched.rule.due) == (
        "enabled",
        ["enabled"],
        True,
        True,
    )
    assert switched.rule.next_due_at is not None

    mission = fail_a_mission(ops)
    preview = ops.preview_trigger_rule("every-failure")
    assert (preview.matches, preview.would_propose, preview.saved) == (True, True, True)
    assert preview.proposal is not None
    assert preview.proposal["title"] == f"Diagnose mission #{mission}"
    assert preview.outcome == {"status": "accepted", "reason": None}

    ops.heartbeat()
    rule = ops.trigger_rule("every-failure")
    assert isinstance(rule, TriggerRule)
    assert rule.fire_count == 1
    assert rule.last_fired_at is not None
    [fire] = rule.recent_fires
    proposal = scalar(conn, "select id from ops_mission_proposals where source = 'trigger'")
    assert (fire["proposal_id"], fire["status"]) == (proposal, "accepted")
    assert [r.name for r in ops.trigger_rules() if r.fire_count] == ["every-failure"]

    updated = ops.set_trigger_rule({**rule.definition(), "cooldown_minutes": 30}, "ada")
    assert (updated.action, updated.changed, updated.rule.fire_count) == ("updated", ["cooldown_minutes"], 1)
    assert ops.set_trigger_enabled("every-failure", False, "bob").rule.next_due_at is None
    deleted = ops.delete_trigger_rule("every-failure", "ada")
    assert (deleted.action, deleted.rule.name) == ("deleted", "every-failure")
    assert events(conn) == [
        ("trigger:created", "ada"),
        ("trigger:enabled", "bob"),
        ("trigger:updated", "ada"),
        ("trigger:disabled", "bob"),
        ("trigger:deleted", "ada"),
    ]
    with pytest.raises(NotFound, match='trigger rule "every-failure" not found'):
        ops.trigger_rule("every-failure")


def test_a_refused_rule_raises_invalid_input_naming_the_field_and_writes_nothing(
    ops: Ops, conn: psycopg.Connection
) -> None:
    before = snapshot(conn)
    broken = {**RULE, "action_config": {**RULE["action_config"], "steps": [{"kind": "Not A Kind"}]}}
    with pytest.raises(InvalidInput, match=r"^action_config\.steps\[0\]\.kind must match"):
        ops.set_trigger_rule(broken, "ada")
    with pytest.raises(InvalidInput, match=r"^conditions\.event_type is required"):
        ops.set_trigger_rule({**RULE, "conditions": {}}, "ada")
    with pytest.raises(InvalidInput, match=r"^updated_by must be 1 to 200 characters"):
        ops.set_trigger_enabled("mission_failed", True, "")
    with pytest.raises(InvalidInput, match=r"^action_config\.steps\[0\]\.kind must match"):
        ops.preview_trigger_rule(rule=broken)
    with pytest.raises(NotFound):
        ops.delete_trigger_rule("no-such-rule", "ada")
    assert snapshot(conn) == before


def test_a_draft_is_previewed_without_being_saved(ops: Ops, conn: psycopg.Connection) -> None:
    before = snapshot(conn)
    draft = {
        "name": "proactive_research",
        "trigger_event": "schedule",
        "conditions": {"topics": ["churn"]},
        "action_config": {
            "agent_id": "twitter-alt",
            "title": "Tweet about {{topic}}",
            "steps": [{"kind": "post_tweet"}],
        },
        "cooldown_minutes": 60,
    }
    preview = ops.preview_trigger_rule(rule=draft)
    assert (preview.saved, preview.enabled, preview.matches, preview.would_propose) == (False, False, True, False)
    assert preview.proposal is not None
    assert preview.proposal["title"] == "Tweet about churn"
    assert preview.outcome is not None
    assert preview.outcome["status"] == "pending", "post_tweet waits for a human"
    assert snapshot(conn) == before, "neither the draft nor anything else was written"
    assert ops.trigger_rule("proactive_research").action_config["title"] == "Research: {{topic}}"


def test_writers_racing_for_one_new_name_create_it_once(db_url: str, conn: psycopg.Connection) -> None:
    """The name is serialized by an advisory lock: no unique violation, one trigger:created, the rest unchanged."""
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def write() -> None:
        with service(db_url) as api:
            barrier.wait()
            outcomes.append(rpc(api, "ops_set_trigger_rule", rule=RULE, updated_by="racer")["action"])

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["unchanged"] * 5
    assert events(conn) == [("trigger:created", "racer")]
