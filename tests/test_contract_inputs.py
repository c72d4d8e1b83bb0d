"""Contract tests of the SQL API: security surface, bad input (PT400), not found (PT404) and conflicts (PT409).

'Every error leaves nothing written': each refused call is bracketed by a snapshot of all eight ops tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from agent_ops import step
from tests.kit.contract import (
    KIND_RE,
    AsJson,
    claim,
    complete,
    message,
    propose,
    rpc,
    rpc_error,
    service,
    set_policy,
    snapshot,
)
from tests.kit.database import OPS_TABLES, rows, scalar

# The RPC surface the loop's clients call: function -> its named parameters, in order.
SURFACE: dict[str, list[str]] = {
    "ops_create_proposal": ["proposal"],
    "ops_approve_proposal": ["proposal_id", "decided_by"],
    "ops_reject_proposal": ["proposal_id", "reason", "decided_by"],
    "ops_claim_next_step": ["worker_id", "kinds", "max_steps", "lease_seconds"],
    "ops_complete_step": ["step_id", "attempt", "output", "usage"],
    "ops_fail_step": ["step_id", "attempt", "error", "retryable", "usage"],
    "ops_extend_lease": ["step_id", "attempt", "lease_seconds"],
    "ops_finalize_mission": ["mission_id"],
    "ops_cancel_mission": ["mission_id", "reason"],
    "ops_recover_stale_steps": [],
    "ops_evaluate_triggers": [],
    "ops_process_reactions": [],
    "ops_heartbeat": [],
    "ops_emit_event": ["event"],
    "ops_set_policy": ["key", "value", "updated_by"],
    "ops_get_policy": ["key"],
    # Added with the worker: graceful shutdown hands running steps back.
    "ops_release_step": ["step_id", "attempt", "reason"],
    # Unattended operation: worker presence and the notification outbox.
    "ops_worker_heartbeat": ["worker"],
    "ops_worker_sign_off": ["worker_id"],
    "ops_claim_notifications": ["deliverer", "max_items"],
    "ops_report_notification": ["id", "attempt", "delivered", "http_status", "error", "retry_after_seconds"],
    # Trigger rules through the API.
    "ops_set_trigger_rule": ["rule", "updated_by"],
    "ops_set_trigger_enabled": ["name", "enabled", "updated_by"],
    "ops_delete_trigger_rule": ["name", "updated_by"],
    # Batch reports (20261203007000): many reports in one call, and reports with the next claim.
    "ops_report_steps": ["reports"],
    "ops_report_and_claim": ["worker_id", "reports", "kinds", "max_steps", "lease_seconds"],
}

READ_API = (
    "ops_list_proposals",
    "ops_list_missions",
    "ops_get_mission",
    "ops_list_steps",
    "ops_list_events",
    "ops_status",
    # Added with the ops console.
    "ops_list_policy",
    "ops_list_action_runs",
    "ops_preview_gates",
    # Unattended operation: who works, what was not delivered, what /metrics and the charts show.
    "ops_list_workers",
    "ops_list_notifications",
    "ops_metrics",
    "ops_metrics_history",
    # Trigger rules: the list, one rule, and the dry run.
    "ops_list_trigger_rules",
    "ops_get_trigger_rule",
    "ops_preview_trigger_rule",
    # Spend per UTC day and agent against the budgets.
    "ops_list_spend",
)

# A column each table has that can be assigned to itself (identity columns cannot).
WRITABLE_COLUMN = {
    "ops_mission_proposals": "title",
    "ops_missions": "title",
    "ops_mission_steps": "kind",
    "ops_agent_events": "title",
    "ops_policy": "value",
    "ops_agent_reactions": "reason",
    "ops_trigger_rules": "name",
    "ops_action_runs": "action",
}


@pytest.fixture
def api(db_url: str) -> Any:
    with service(db_url) as connection:
        yield connection


# --- the declared surface ------------------------------------------------------------------------------------


def test_rpc_surface_names_parameters_and_attributes(conn: psycopg.Connection) -> None:
    """'public schema; exact names; snake_case named parameters; no overloads ... VOLATILE, set search_path =
    pg_catalog, pg_temp, SECURITY DEFINER owned by the migration owner, EXECUTE revoked from
    public/anon/authenticated and granted to service_role only.'"""
    found = rows(
        conn,
        b"select p.proname, coalesce(p.proargnames, '{}'), p.prosecdef, p.provolatile, coalesce(p.proconfig, '{}'),"
        b"       pg_get_userbyid(p.proowner), pg_get_function_result(p.oid), p.pronargs,"
        b"       has_function_privilege('service_role', p.oid, 'execute'),"
        b"       has_function_privilege('anon', p.oid, 'execute'),"
        b"       has_function_privilege('authenticated', p.oid, 'execute'),"
        b"       exists (select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
        b"                where a.grantee = 0 and a.privilege_type = 'EXECUTE')"
        b"  from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        b" where n.nspname = 'public' and p.proname like 'ops\\_%' order by p.proname",
    )
    names = [r[0] for r in found]
    assert len(names) == len(set(names)), "no overloads"
    # The read functions for status views (STABLE) and the loop's surface above, and nothing else.
    assert sorted(set(names) - set(READ_API)) == sorted(SURFACE), "exact names"
    problems: list[str] = []
    for name, argnames, secdef, volatile, config, owner, result, nargs, svc, anon, auth, public in found:
        if name in READ_API:
            if volatile != "s" or not secdef or not svc or anon or auth or public:
                problems.append(f"{name}: read function must be STABLE, SECURITY DEFINER, service_role only")
            continue
        if list(argnames)[:nargs] != SURFACE[name]:
            problems.append(f"{name}: parameters {list(argnames)} != {SURFACE[name]}")
        if not secdef:
            problems.append(f"{name}: not SECURITY DEFINER")
        if volatile != "v":
            problems.append(f"{name}: not VOLATILE")
        if list(config) != ["search_path=pg_catalog, pg_temp"]:
            problems.append(f"{name}: search_path not pg_catalog, pg_temp ({config})")
        if owner != "postgres":
            problems.append(f"{name}: owned by {owner}")
        if result != "jsonb":
            problems.append(f"{name}: returns {result}")
        if not svc or anon or auth or public:
            problems.append(f"{name}: execute service_role={svc} anon={anon} authenticated={auth} public={public}")
    assert problems == []


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_anon_and_authenticated_can_execute_nothing(db_url: str, conn: psycopg.Connection, role: str) -> None:
    """'anon/authenticated can execute nothing'."""
    before = snapshot(conn)
    outcome: dict[str, str] = {}
    with psycopg.connect(db_url, autocommit=True) as outsider:
        outsider.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        for function, params in SURFACE.items():
            try:
                rpc(outsider, function, **dict.fromkeys(params))
                outcome[function] = "executed"
            except psycopg.Error as error:
                outcome[function] = error.sqlstate or "?"
    assert outcome == dict.fromkeys(SURFACE, "42501")
    assert snapshot(conn) == before


def test_service_role_cannot_write_any_ops_table_while_the_functions_work(
    db_url: str, conn: psycopg.Connection
) -> None:
    """'Nobody but these functions writes the ops tables (service_role keeps SELECT).'"""
    with service(db_url) as api:
        created = propose(api, [step("crawl")])
        before = snapshot(conn)
        outcome: dict[str, str] = {}
        for table in OPS_TABLES:
            ident = sql.Identifier(table)
            column = sql.Identifier(WRITABLE_COLUMN[table])
            statements = {
                "select": sql.SQL("select count(*) from public.{}").format(ident),
                "insert": sql.SQL("insert into public.{} default values").format(ident),
                "update": sql.SQL("update public.{} set {} = {}").format(ident, column, column),
                "delete": sql.SQL("delete from public.{}").format(ident),
                "truncate": sql.SQL("truncate public.{} cascade").format(ident),
            }
            for verb, statement in statements.items():
                try:
                    api.execute(statement)
                    outcome[f"{table}.{verb}"] = "ok"
                except psycopg.Error as error:
                    outcome[f"{table}.{verb}"] = error.sqlstate or "?"
        expected = {}
        for table in OPS_TABLES:
            expected[f"{table}.select"] = "ok"
            for verb in ("insert", "update", "delete", "truncate"):
                expected[f"{table}.{verb}"] = "42501"
        assert outcome == expected
        assert snapshot(conn) == before

        # ... while the functions, running as their owner, do write.
        [item] = claim(api)
        assert item["mission_id"] == created["mission_id"]
        assert complete(api, item["id"], item["attempt"], {"ok": True})["mission_status"] == "succeeded"
        set_policy(api, "system", {"enabled": True})
        rpc(api, "ops_emit_event", event={"type": "tweet:posted", "agent_id": "twitter-alt"})
        rpc(api, "ops_heartbeat")


# --- PT400: bad input to every RPC ---------------------------------------------------------------------------


class World:
    """Real ids to aim bad input at, so that only the field under test is wrong."""

    def __init__(self, api: psycopg.Connection) -> None:
        self.pending = propose(api, [step("post_tweet")], agent_id="twitter-alt")["proposal_id"]
        running = propose(api, [step("crawl"), step("analyze")])
        self.mission = running["mission_id"]
        [item] = claim(api)
        self.step = item["id"]
        self.attempt = item["attempt"]


Case = tuple[str, Callable[[World], dict[str, Any]], str]


def _proposal(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"agent_id": "scout", "title": "fine", "steps": [{"kind": "crawl"}]}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not _DROP}


def _rule(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "contract-rule",
        "trigger_event": "event",
        "conditions": {"event_type": "tweet:posted"},
        "action_config": _proposal(),
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not _DROP}


def _reserved(entity: str) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"event": {"type": f"{entity}:done", "agent_id": "a"}}


_DROP = object()
BIG = "x" * 2_000_000


def _usage_case(usage: object, error: str | None) -> Callable[[World], dict[str, Any]]:
    """A report of the running step with bad `usage` (an ops_fail_step report when `error` is given)."""
    return lambda w: {"step_id": w.step, "attempt": w.attempt, **({} if error is None else {"error": error}),
                      "usage": usage}  # fmt: skip


CASES: dict[str, list[Case]] = {
    "ops_create_proposal": [
        ("sql null", lambda w: {"proposal": None}, "proposal"),
        ("json null", lambda w: {"proposal": AsJson(None)}, "proposal"),
        ("array", lambda w: {"proposal": AsJson([1])}, "proposal"),
        ("string", lambda w: {"proposal": AsJson("crawl")}, "proposal"),
        ("agent_id missing", lambda w: {"proposal": _proposal(agent_id=_DROP)}, "agent_id"),
        ("agent_id pattern", lambda w: {"proposal": _proposal(agent_id="Not An Agent!")}, "agent_id"),
        ("agent_id number", lambda w: {"proposal": _proposal(agent_id=5)}, "agent_id"),
        ("title missing", lambda w: {"proposal": _proposal(title=_DROP)}, "title"),
        ("title empty", lambda w: {"proposal": _proposal(title="")}, "title"),
        ("title too long", lambda w: {"proposal": _proposal(title="t" * 10_000)}, "title"),
        ("steps missing", lambda w: {"proposal": _proposal(steps=_DROP)}, "steps"),
        ("steps empty", lambda w: {"proposal": _proposal(steps=[])}, "steps"),
        ("steps object", lambda w: {"proposal": _proposal(steps={"kind": "crawl"})}, "steps"),
        ("too many steps", lambda w: {"proposal": _proposal(steps=[{"kind": "crawl"}] * 1000)}, "steps"),
        ("kind missing", lambda w: {"proposal": _proposal(steps=[{"payload": {}}])}, "steps[0].kind"),
        ("step not object", lambda w: {"proposal": _proposal(steps=["crawl"])}, "steps[0]"),
        (
            "payload array",
            lambda w: {"proposal": _proposal(steps=[{"kind": "crawl"}, {"kind": "crawl", "payload": [1]}])},
            "steps[1].payload",
        ),
        (
            "payload too big",
            lambda w: {"proposal": _proposal(steps=[{"kind": "crawl", "payload": {"x": BIG}}])},
            "steps[0].payload",
        ),
        (
            "depends_on unknown",
            lambda w: {"proposal": _proposal(steps=[{"kind": "crawl"}, {"kind": "crawl", "depends_on": [5]}])},
            "steps[1].depends_on",
        ),
        (
            "depends_on self",
            lambda w: {"proposal": _proposal(steps=[{"kind": "crawl", "depends_on": [0]}])},
            "steps[0].depends_on",
        ),
        (
            "depends_on string",
            lambda w: {"proposal": _proposal(steps=[{"kind": "crawl"}, {"kind": "crawl", "depends_on": "0"}])},
            "steps[1].depends_on",
        ),
        ("source", lambda w: {"proposal": _proposal(source="robot")}, "source"),
        ("description too long", lambda w: {"proposal": _proposal(description="d" * 100_000)}, "description"),
        ("dedupe_key empty", lambda w: {"proposal": _proposal(dedupe_key="")}, "dedupe_key"),
        ("dedupe_key too long", lambda w: {"proposal": _proposal(dedupe_key="k" * 10_000)}, "dedupe_key"),
        ("metadata array", lambda w: {"proposal": _proposal(metadata=[1])}, "metadata"),
    ],
    "ops_approve_proposal": [
        ("proposal_id null", lambda w: {"proposal_id": None, "decided_by": "alice"}, "proposal_id"),
        ("decided_by null", lambda w: {"proposal_id": w.pending, "decided_by": None}, "decided_by"),
        ("decided_by empty", lambda w: {"proposal_id": w.pending, "decided_by": ""}, "decided_by"),
    ],
    "ops_reject_proposal": [
        ("proposal_id null", lambda w: {"proposal_id": None, "reason": "no", "decided_by": "a"}, "proposal_id"),
        ("reason null", lambda w: {"proposal_id": w.pending, "reason": None, "decided_by": "a"}, "reason"),
        ("reason empty", lambda w: {"proposal_id": w.pending, "reason": "", "decided_by": "a"}, "reason"),
        ("decided_by null", lambda w: {"proposal_id": w.pending, "reason": "no", "decided_by": None}, "decided_by"),
    ],
    "ops_claim_next_step": [
        ("worker_id null", lambda w: {"worker_id": None}, "worker_id"),
        ("worker_id empty", lambda w: {"worker_id": ""}, "worker_id"),
        ("max_steps 0", lambda w: {"worker_id": "w", "max_steps": 0}, "max_steps"),
        ("max_steps negative", lambda w: {"worker_id": "w", "max_steps": -1}, "max_steps"),
        ("max_steps huge", lambda w: {"worker_id": "w", "max_steps": 1_000_000}, "max_steps"),
        ("lease 0", lambda w: {"worker_id": "w", "lease_seconds": 0}, "lease_seconds"),
        ("lease negative", lambda w: {"worker_id": "w", "lease_seconds": -5}, "lease_seconds"),
        ("lease huge", lambda w: {"worker_id": "w", "lease_seconds": 100_000_000}, "lease_seconds"),
        ("kinds pattern", lambda w: {"worker_id": "w", "kinds": ["Bad Kind"]}, "kinds"),
    ],
    "ops_complete_step": [
        ("step_id null", lambda w: {"step_id": None, "attempt": w.attempt}, "step_id"),
        ("attempt null", lambda w: {"step_id": w.step, "attempt": None}, "attempt"),
        ("attempt 0", lambda w: {"step_id": w.step, "attempt": 0}, "attempt"),
        ("attempt negative", lambda w: {"step_id": w.step, "attempt": -1}, "attempt"),
        *[
            (label, _usage_case(usage, error=None), field)
            for label, usage, field in (
                ("usage array", AsJson([1]), "usage"),
                ("usage string", AsJson("lots"), "usage"),
                ("usage unknown field", {"colour": "red"}, "usage.colour"),
                ("usage tokens_in negative", {"tokens_in": -1}, "usage.tokens_in"),
                ("usage tokens_in fraction", {"tokens_in": 1.5}, "usage.tokens_in"),
                ("usage tokens_out string", {"tokens_out": "5"}, "usage.tokens_out"),
                ("usage tokens_out huge", {"tokens_out": 10**12}, "usage.tokens_out"),
                ("usage cost_usd negative", {"cost_usd": -0.01}, "usage.cost_usd"),
                ("usage cost_usd huge", {"cost_usd": 10**7}, "usage.cost_usd"),
                ("usage model pattern", {"model": "not a model"}, "usage.model"),
                ("usage model number", {"model": 4}, "usage.model"),
            )
        ],
    ],
    "ops_fail_step": [
        ("step_id null", lambda w: {"step_id": None, "attempt": w.attempt, "error": "e"}, "step_id"),
        ("attempt null", lambda w: {"step_id": w.step, "attempt": None, "error": "e"}, "attempt"),
        ("attempt 0", lambda w: {"step_id": w.step, "attempt": 0, "error": "e"}, "attempt"),
        ("error null", lambda w: {"step_id": w.step, "attempt": w.attempt, "error": None}, "error"),
        ("error empty", lambda w: {"step_id": w.step, "attempt": w.attempt, "error": ""}, "error"),
        *[
            (label, _usage_case(usage, error="e"), field)
            for label, usage, field in (
                ("usage array", AsJson([1]), "usage"),
                ("usage unknown field", {"tokens": 5}, "usage.tokens"),
                ("usage tokens_in negative", {"tokens_in": -1}, "usage.tokens_in"),
                ("usage cost_usd string", {"cost_usd": "free"}, "usage.cost_usd"),
                ("usage model pattern", {"model": "-leading-dash"}, "usage.model"),
            )
        ],
    ],
    "ops_release_step": [
        ("step_id null", lambda w: {"step_id": None, "attempt": w.attempt, "reason": "r"}, "step_id"),
        ("attempt 0", lambda w: {"step_id": w.step, "attempt": 0, "reason": "r"}, "attempt"),
        ("reason null", lambda w: {"step_id": w.step, "attempt": w.attempt, "reason": None}, "reason"),
        ("reason blank", lambda w: {"step_id": w.step, "attempt": w.attempt, "reason": " "}, "reason"),
    ],
    "ops_extend_lease": [
        ("step_id null", lambda w: {"step_id": None, "attempt": w.attempt}, "step_id"),
        ("attempt null", lambda w: {"step_id": w.step, "attempt": None}, "attempt"),
        ("attempt 0", lambda w: {"step_id": w.step, "attempt": 0}, "attempt"),
        ("lease 0", lambda w: {"step_id": w.step, "attempt": w.attempt, "lease_seconds": 0}, "lease_seconds"),
        ("lease negative", lambda w: {"step_id": w.step, "attempt": w.attempt, "lease_seconds": -1}, "lease_seconds"),
        (
            "lease huge",
            lambda w: {"step_id": w.step, "attempt": w.attempt, "lease_seconds": 100_000_000},
            "lease_seconds",
        ),
    ],
    "ops_finalize_mission": [
        ("mission_id null", lambda w: {"mission_id": None}, "mission_id"),
    ],
    "ops_cancel_mission": [
        ("mission_id null", lambda w: {"mission_id": None, "reason": "r"}, "mission_id"),
        ("reason null", lambda w: {"mission_id": w.mission, "reason": None}, "reason"),
        ("reason empty", lambda w: {"mission_id": w.mission, "reason": ""}, "reason"),
    ],
    "ops_emit_event": [
        ("sql null", lambda w: {"event": None}, "event"),
        ("json null", lambda w: {"event": AsJson(None)}, "event"),
        ("array", lambda w: {"event": AsJson([1])}, "event"),
        ("type missing", lambda w: {"event": {"agent_id": "a"}}, "type"),
        ("type pattern", lambda w: {"event": {"type": "NotAType", "agent_id": "a"}}, "type"),
        ("type without colon", lambda w: {"event": {"type": "tweet", "agent_id": "a"}}, "type"),
        *[
            (
                f"reserved {entity}",
                _reserved(entity),
                "type",
            )
            for entity in ("proposal", "mission", "step", "reaction", "trigger", "policy", "heartbeat")
        ],
        ("tags string", lambda w: {"event": {"type": "tweet:posted", "agent_id": "a", "tags": "x"}}, "tags"),
        ("tags numbers", lambda w: {"event": {"type": "tweet:posted", "agent_id": "a", "tags": [1, 2]}}, "tags"),
        ("payload array", lambda w: {"event": {"type": "tweet:posted", "agent_id": "a", "payload": [1]}}, "payload"),
        ("agent_id pattern", lambda w: {"event": {"type": "tweet:posted", "agent_id": "Bad Agent"}}, "agent_id"),
    ],
    "ops_set_policy": [
        ("key null", lambda w: {"key": None, "value": {"enabled": True}, "updated_by": "me"}, "key"),
        ("key empty", lambda w: {"key": "", "value": {"enabled": True}, "updated_by": "me"}, "key"),
        ("key pattern", lambda w: {"key": "Bad Key", "value": {"enabled": True}, "updated_by": "me"}, "key"),
        ("key unknown", lambda w: {"key": "no_such_key", "value": {"enabled": True}, "updated_by": "me"}, "key"),
        ("value null", lambda w: {"key": "system", "value": None, "updated_by": "me"}, "value"),
        ("value array", lambda w: {"key": "system", "value": AsJson([1]), "updated_by": "me"}, "value"),
        ("updated_by null", lambda w: {"key": "system", "value": {"enabled": True}, "updated_by": None}, "updated_by"),
        ("system.enabled", lambda w: {"key": "system", "value": {"enabled": "yes"}, "updated_by": "me"}, "enabled"),
        (
            "gate daily_limit",
            lambda w: {"key": "step_kind_gates", "value": {"post_tweet": {"daily_limit": -1}}, "updated_by": "me"},
            "daily_limit",
        ),
        (
            "reaction probability",
            lambda w: {
                "key": "reaction_matrix",
                "value": {
                    "enabled": True,
                    "patterns": [
                        {
                            "source": "*",
                            "tags": ["x"],
                            "target": "brain",
                            "type": "analyze",
                            "probability": 2,
                            "cooldown": 1,
                        }
                    ],
                },
                "updated_by": "me",
            },
            "probability",
        ),
        (
            "worker kind enabled",
            lambda w: {"key": "worker:crawl", "value": {"enabled": "no"}, "updated_by": "me"},
            "enabled",
        ),
        (
            "max_active_missions",
            lambda w: {"key": "max_active_missions", "value": {"limit": -1}, "updated_by": "me"},
            "limit",
        ),
        (
            "daily_proposal_limit",
            lambda w: {"key": "daily_proposal_limit", "value": {"limit": "lots"}, "updated_by": "me"},
            "limit",
        ),
    ],
    "ops_get_policy": [
        ("key null", lambda w: {"key": None}, "key"),
        ("key pattern", lambda w: {"key": "Bad Key"}, "key"),
    ],
    "ops_worker_heartbeat": [
        ("sql null", lambda w: {"worker": None}, "worker"),
        ("array", lambda w: {"worker": AsJson([1])}, "worker"),
        ("worker_id missing", lambda w: {"worker": {"host": "h"}}, "worker_id"),
        ("worker_id too long", lambda w: {"worker": {"worker_id": "w" * 300}}, "worker_id"),
        ("kinds pattern", lambda w: {"worker": {"worker_id": "w", "kinds": ["Bad Kind"]}}, "kinds"),
        ("concurrency", lambda w: {"worker": {"worker_id": "w", "concurrency": 0}}, "concurrency"),
        ("unknown field", lambda w: {"worker": {"worker_id": "w", "colour": "red"}}, "colour"),
    ],
    "ops_worker_sign_off": [
        ("worker_id null", lambda w: {"worker_id": None}, "worker_id"),
        ("worker_id blank", lambda w: {"worker_id": "  "}, "worker_id"),
    ],
    "ops_claim_notifications": [
        ("deliverer null", lambda w: {"deliverer": None}, "deliverer"),
        ("deliverer blank", lambda w: {"deliverer": "  "}, "deliverer"),
        ("max_items zero", lambda w: {"deliverer": "d", "max_items": 0}, "max_items"),
        ("max_items too many", lambda w: {"deliverer": "d", "max_items": 1000}, "max_items"),
    ],
    "ops_report_notification": [
        ("id null", lambda w: {"id": None, "attempt": 1, "delivered": True}, "id"),
        ("attempt zero", lambda w: {"id": 1, "attempt": 0, "delivered": True}, "attempt"),
        ("delivered null", lambda w: {"id": 1, "attempt": 1, "delivered": None}, "delivered"),
        ("http_status", lambda w: {"id": 1, "attempt": 1, "delivered": False, "http_status": 42}, "http_status"),
        (
            "retry_after_seconds",
            lambda w: {"id": 1, "attempt": 1, "delivered": False, "http_status": 429, "retry_after_seconds": -1},
            "retry_after_seconds",
        ),
        ("no reason", lambda w: {"id": 1, "attempt": 1, "delivered": False}, "error"),
    ],
    "ops_set_trigger_rule": [
        ("sql null", lambda w: {"rule": None, "updated_by": "me"}, "rule"),
        ("array", lambda w: {"rule": AsJson([1]), "updated_by": "me"}, "rule"),
        ("name missing", lambda w: {"rule": _rule(name=_DROP), "updated_by": "me"}, "name"),
        ("name pattern", lambda w: {"rule": _rule(name="Not A Name"), "updated_by": "me"}, "name"),
        ("name too long", lambda w: {"rule": _rule(name="r" * 200), "updated_by": "me"}, "name"),
        ("unknown field", lambda w: {"rule": _rule(colour="red"), "updated_by": "me"}, "colour"),
        ("checker", lambda w: {"rule": _rule(trigger_event="cron"), "updated_by": "me"}, "trigger_event"),
        ("conditions array", lambda w: {"rule": _rule(conditions=[1]), "updated_by": "me"}, "conditions"),
        ("event_type missing", lambda w: {"rule": _rule(conditions={}), "updated_by": "me"}, "conditions.event_type"),
        ("template missing", lambda w: {"rule": _rule(action_config=_DROP), "updated_by": "me"}, "action_config"),
        (
            "template kind",
            lambda w: {"rule": _rule(action_config=_proposal(steps=[{"kind": "Bad Kind"}])), "updated_by": "me"},
            "action_config.steps[0].kind",
        ),
        (
            "template placeholder",
            lambda w: {"rule": _rule(action_config=_proposal(title="{{topic}}")), "updated_by": "me"},
            "action_config",
        ),
        ("cooldown negative", lambda w: {"rule": _rule(cooldown_minutes=-1), "updated_by": "me"}, "cooldown_minutes"),
        ("skip not schedule", lambda w: {"rule": _rule(skip_probability=0.5), "updated_by": "me"}, "skip_probability"),
        ("jitter string", lambda w: {"rule": _rule(jitter_minutes="5"), "updated_by": "me"}, "jitter_minutes"),
        ("enabled string", lambda w: {"rule": _rule(enabled="yes"), "updated_by": "me"}, "enabled"),
        ("too big", lambda w: {"rule": _rule(action_config=_proposal(description=BIG)), "updated_by": "me"}, "rule"),
        ("updated_by null", lambda w: {"rule": _rule(), "updated_by": None}, "updated_by"),
    ],
    "ops_set_trigger_enabled": [
        ("name null", lambda w: {"name": None, "enabled": True, "updated_by": "me"}, "name"),
        ("name too long", lambda w: {"name": "r" * 200, "enabled": True, "updated_by": "me"}, "name"),
        ("enabled null", lambda w: {"name": "mission_failed", "enabled": None, "updated_by": "me"}, "enabled"),
        ("updated_by blank", lambda w: {"name": "mission_failed", "enabled": True, "updated_by": " "}, "updated_by"),
    ],
    "ops_delete_trigger_rule": [
        ("name null", lambda w: {"name": None, "updated_by": "me"}, "name"),
        ("name empty", lambda w: {"name": "", "updated_by": "me"}, "name"),
        ("updated_by null", lambda w: {"name": "mission_failed", "updated_by": None}, "updated_by"),
    ],
    "ops_report_steps": [
        ("sql null", lambda w: {"reports": None}, "reports"),
        ("object", lambda w: {"reports": {"step_id": w.step, "attempt": w.attempt}}, "reports"),
        ("empty", lambda w: {"reports": AsJson([])}, "reports"),
        ("too many", lambda w: {"reports": AsJson([{"step_id": w.step, "attempt": w.attempt}] * 101)}, "reports"),
        ("attempt missing", lambda w: {"reports": AsJson([{"step_id": w.step}])}, "reports[0].attempt"),
        (
            "output and error",
            lambda w: {"reports": AsJson([{"step_id": w.step, "attempt": w.attempt, "output": {}, "error": "e"}])},
            "reports[0]",
        ),
        (
            "usage",
            lambda w: {"reports": AsJson([{"step_id": w.step, "attempt": w.attempt, "usage": {"tokens_in": -1}}])},
            "reports[0].usage.tokens_in",
        ),
        (
            "step repeated",
            lambda w: {"reports": AsJson([{"step_id": w.step, "attempt": w.attempt}] * 2)},
            "reports[1].step_id",
        ),
    ],
    "ops_report_and_claim": [
        ("worker_id null", lambda w: {"worker_id": None}, "worker_id"),
        ("max_steps negative", lambda w: {"worker_id": "w", "max_steps": -1}, "max_steps"),
        ("max_steps huge", lambda w: {"worker_id": "w", "max_steps": 101}, "max_steps"),
        (
            "report usage",
            lambda w: {
                "worker_id": "w",
                "reports": AsJson([{"step_id": w.step, "attempt": w.attempt, "usage": {"model": "not a model"}}]),
            },
            "reports[0].usage.model",
        ),
    ],
    # A read function too: its one parameter has a range.
    "ops_list_spend": [
        ("days null", lambda w: {"days": None}, "days"),
        ("days 0", lambda w: {"days": 0}, "days"),
        ("days negative", lambda w: {"days": -7}, "days"),
        ("days over a year", lambda w: {"days": 367}, "days"),
    ],
}


def test_every_rpc_with_parameters_has_bad_input_cases() -> None:
    assert set(CASES) - set(READ_API) == {name for name, params in SURFACE.items() if params}
    assert set(CASES) <= set(SURFACE) | set(READ_API), "cases only for functions of the surface"


def test_bad_usage_and_days_are_refused_with_the_rule(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """The exact messages of the cases above that the clients show (Ops, the worker's log)."""
    world = World(api)
    before = snapshot(conn)
    refused = {
        "complete": rpc_error(api, "ops_complete_step", step_id=world.step, attempt=world.attempt,
                              usage={"tokens_in": -1}),
        "fail": rpc_error(api, "ops_fail_step", step_id=world.step, attempt=world.attempt, error="e",
                          usage={"cost_usd": 10**7}),
        "unknown": rpc_error(api, "ops_complete_step", step_id=world.step, attempt=world.attempt,
                             usage={"tokens": 1}),
        "spend": rpc_error(api, "ops_list_spend", days=0),
    }  # fmt: skip
    assert {name: (error.sqlstate, message(error)) for name, error in refused.items()} == {
        "complete": ("PT400", "usage.tokens_in must be from 0 to 1000000000"),
        "fail": ("PT400", "usage.cost_usd must be from 0 to 1000000"),
        "unknown": (
            "PT400",
            "usage.tokens is not a known field (expected one of: tokens_in, tokens_out, cost_usd, model)",
        ),
        "spend": ("PT400", "days must be from 1 to 366"),
    }
    assert snapshot(conn) == before


@pytest.mark.parametrize("function", sorted(CASES))
def test_bad_input_gets_pt400_naming_the_field_and_writes_nothing(
    api: psycopg.Connection, conn: psycopg.Connection, function: str
) -> None:
    """'PT400 invalid input (the message names the field and the rule ...). Every error leaves nothing written.'"""
    world = World(api)
    problems: list[str] = []
    for label, arguments, field in CASES[function]:
        before = snapshot(conn)
        try:
            result = rpc(api, function, **arguments(world))
            problems.append(f"{label}: accepted, returned {str(result)[:200]}")
            world = World(api)  # the accepted call changed the world; aim the next cases at fresh rows
        except psycopg.Error as error:
            text = message(error)
            if error.sqlstate != "PT400":
                problems.append(f"{label}: {error.sqlstate} {text!r}")
            elif field not in text or len(text) < len(field) + 8:
                problems.append(f"{label}: message {text!r} does not name {field!r} and a rule")
        if snapshot(conn) != before and not (problems and problems[-1].startswith(f"{label}: accepted")):
            problems.append(f"{label}: something was written")
    assert problems == [], "\n".join(problems)


def test_a_bad_step_kind_is_refused_with_its_index_and_the_pattern(
    api: psycopg.Connection, conn: psycopg.Connection
) -> None:
    before = snapshot(conn)
    bad = {"agent_id": "scout", "title": "t", "steps": [{"kind": "crawl"}, {"kind": "analyze"}, {"kind": "Post-Tweet"}]}
    error = rpc_error(api, "ops_create_proposal", proposal=bad)
    assert error.sqlstate == "PT400"
    assert message(error) == f"steps[2].kind must match {KIND_RE}"
    assert snapshot(conn) == before


# --- PT404 and PT409 -----------------------------------------------------------------------------------------


def test_not_found_is_pt404_and_writes_nothing(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    World(api)
    missing = 987_654_321
    calls: dict[str, dict[str, Any]] = {
        "ops_approve_proposal": {"proposal_id": missing, "decided_by": "a"},
        "ops_reject_proposal": {"proposal_id": missing, "reason": "r", "decided_by": "a"},
        "ops_complete_step": {"step_id": missing, "attempt": 1},
        "ops_fail_step": {"step_id": missing, "attempt": 1, "error": "e"},
        "ops_extend_lease": {"step_id": missing, "attempt": 1},
        "ops_finalize_mission": {"mission_id": missing},
        "ops_cancel_mission": {"mission_id": missing, "reason": "r"},
    }
    outcome: dict[str, str] = {}
    before = snapshot(conn)
    for function, arguments in calls.items():
        error = rpc_error(api, function, **arguments)
        outcome[function] = error.sqlstate or "?"
    assert outcome == dict.fromkeys(calls, "PT404")
    assert snapshot(conn) == before


def test_conflicts_are_pt409_and_write_nothing(api: psycopg.Connection, conn: psycopg.Connection) -> None:
    """'PT409 conflict (not pending, lease lost, stale attempt)'."""
    accepted = propose(api, [step("crawl")], title="accepted")
    rejected = propose(api, [step("deploy")], title="rejected by gate")
    human = propose(api, [step("post_tweet")], agent_id="twitter-alt", title="rejected by human")
    rpc(api, "ops_reject_proposal", proposal_id=human["proposal_id"], reason="no", decided_by="a")
    queued = propose(api, [step("analyze")], title="queued only")
    [item] = claim(api, kinds=["crawl"])
    done = propose(api, [step("write_content")], title="done")
    [finished] = claim(api, kinds=["write_content"])
    complete(api, finished["id"], finished["attempt"])
    queued_step = scalar(conn, b"select id from public.ops_mission_steps where mission_id = %s", [queued["mission_id"]])

    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "approve accepted": ("ops_approve_proposal", {"proposal_id": accepted["proposal_id"], "decided_by": "a"}),
        "approve gate-rejected": ("ops_approve_proposal", {"proposal_id": rejected["proposal_id"], "decided_by": "a"}),
        "reject rejected": (
            "ops_reject_proposal",
            {"proposal_id": human["proposal_id"], "reason": "again", "decided_by": "a"},
        ),
        "reject accepted": (
            "ops_reject_proposal",
            {"proposal_id": accepted["proposal_id"], "reason": "r", "decided_by": "a"},
        ),
        "complete future attempt": ("ops_complete_step", {"step_id": item["id"], "attempt": item["attempt"] + 1}),
        "complete never-claimed": ("ops_complete_step", {"step_id": queued_step, "attempt": 1}),
        "fail future attempt": ("ops_fail_step", {"step_id": item["id"], "attempt": item["attempt"] + 1, "error": "e"}),
        "fail never-claimed": ("ops_fail_step", {"step_id": queued_step, "attempt": 1, "error": "e"}),
        "extend never-claimed": ("ops_extend_lease", {"step_id": queued_step, "attempt": 1}),
        "extend finished": ("ops_extend_lease", {"step_id": finished["id"], "attempt": finished["attempt"]}),
        "fail finished": ("ops_fail_step", {"step_id": finished["id"], "attempt": finished["attempt"], "error": "e"}),
    }
    assert done["status"] == "accepted"
    outcome: dict[str, str] = {}
    before = snapshot(conn)
    for label, (function, arguments) in calls.items():
        error = rpc_error(api, function, **arguments)
        outcome[label] = f"{error.sqlstate} {message(error)}"
    assert {label: text.split(" ")[0] for label, text in outcome.items()} == dict.fromkeys(calls, "PT409"), outcome
    assert snapshot(conn) == before
