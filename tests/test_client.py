"""The `Ops` client, the same behavioural suite over both transports (direct psycopg and PostgREST)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
import pytest

from agent_ops import Conflict, InvalidInput, NotFound, Ops, PermissionDenied, Secret, Settings, TransportError, step
from agent_ops.models import ClaimedStep, KindLimit, SpendRow, StepReport, StepResult, Usage
from agent_ops.transports import Poll, Transport
from tests.kit.database import ROOT
from tests.kit.settings import direct_settings, rest_settings, server_url
from tests.postgrest_standin import StandIn
from tests.tcp_proxy import FlakyProxy


def test_propose_accepts_waits_rejects_and_dedupes(ops: Ops) -> None:
    accepted = ops.propose("brain", "research", [step("crawl"), step("analyze")])
    assert accepted.accepted
    assert accepted.mission_id is not None
    pending = ops.propose("twitter-alt", "tweet", [step("post_tweet", {"text": "hi"})])
    assert (pending.status, pending.mission_id) == ("pending", None)
    assert pending.reason == "step kind post_tweet needs a human (not in auto_approve.allowed_step_kinds)"
    rejected = ops.propose("ops", "ship it", [step("deploy")])
    assert rejected.status == "rejected"
    assert rejected.reason is not None
    assert "deploy is disabled" in rejected.reason
    first = ops.propose("brain", "once", [step("analyze")], dedupe_key="k-1")
    again = ops.propose("brain", "once", [step("analyze")], dedupe_key="k-1")
    assert (again.proposal_id, again.duplicate, first.duplicate) == (first.proposal_id, True, False)


def test_approve_and_reject(ops: Ops) -> None:
    a = ops.propose("twitter-alt", "a", [step("post_tweet")])
    b = ops.propose("twitter-alt", "b", [step("post_tweet")])
    approved = ops.approve(a.proposal_id, "alice")
    assert approved.accepted
    assert approved.mission_id is not None
    rejected = ops.reject(b.proposal_id, "off-brand", "bob")
    assert (rejected.status, rejected.reason) == ("rejected", "off-brand")
    with pytest.raises(Conflict, match=f"proposal {a.proposal_id} is not pending"):
        ops.approve(a.proposal_id, "alice")


def test_claim_report_and_lease_round_trip(ops: Ops) -> None:
    mission = ops.propose("brain", "two", [step("crawl", {"url": "https://x"}), step("analyze")]).mission_id
    claimed = ops.claim("worker-1", kinds=["crawl"], max_steps=5, lease_seconds=60)
    assert len(claimed) == 1
    first = claimed[0]
    assert isinstance(first, ClaimedStep)
    assert (first.mission_id, first.kind, first.payload, first.attempt, first.agent_id) == (
        mission,
        "crawl",
        {"url": "https://x"},
        1,
        "brain",
    )
    assert isinstance(first.lease_expires_at, datetime)
    lease = ops.extend_lease(first.id, first.attempt, 120)
    assert lease.lease_expires_at > first.lease_expires_at
    report = ops.complete(first.id, first.attempt, {"pages": 2})
    assert (report.status, report.duplicate, report.mission_status) == ("succeeded", False, "running")
    assert ops.complete(first.id, first.attempt, {"pages": 2}).duplicate

    second = ops.claim("worker-1")[0]
    assert second.inputs == {"0": {"pages": 2}}
    retry = ops.fail(second.id, second.attempt, "rate limited")
    assert retry.status == "queued"
    assert isinstance(retry.retry_at, datetime)
    assert retry.attempts_left == 2


def test_finalize_and_cancel(ops: Ops) -> None:
    mission = ops.propose("brain", "m", [step("crawl"), step("analyze")]).mission_id
    assert mission is not None
    assert ops.finalize(mission).status == "approved"
    outcome = ops.cancel(mission, "no longer needed")
    assert (outcome.status, outcome.finalized, outcome.cancelled_steps, outcome.reason) == (
        "cancelled",
        True,
        2,
        "no longer needed",
    )
    assert ops.finalize(mission).status == "cancelled"


def test_events_emit_and_read(ops: Ops) -> None:
    emitted = ops.emit_event("tweet:posted", "twitter-alt", tags=["launch"], payload={"tweet_id": "t-1"})
    assert emitted.tags == ["tweet:posted", "tweet", "posted", "launch"]
    newest = ops.events(type="tweet:posted")
    assert [e.id for e in newest] == [emitted.event_id]
    assert newest[0].payload == {"tweet_id": "t-1"}
    later = ops.emit_event("tweet:posted", "twitter-alt")
    following = ops.events(tag="tweet", after_id=emitted.event_id)
    assert [e.id for e in following] == [later.event_id]


def test_heartbeat_and_policy(ops: Ops) -> None:
    beat = ops.heartbeat()
    assert beat.ok
    assert beat.run_id is not None
    assert beat.skipped is None
    policy = ops.set_policy("max_active_missions", {"limit": 7}, "tester")
    assert (policy.value, policy.updated_by) == ({"limit": 7}, "tester")
    assert ops.get_policy("max_active_missions").value == {"limit": 7}
    with pytest.raises(InvalidInput) as raised:
        ops.set_policy("max_active_missions", {"limit": -1}, "tester")
    assert raised.value.message == "value.limit must be from 0 to 1000000"
    assert raised.value.code == "PT400"


def test_reads_for_status_views(ops: Ops) -> None:
    accepted = ops.propose("brain", "visible", [step("crawl"), step("analyze")])
    ops.propose("twitter-alt", "waiting", [step("post_tweet")])
    ops.claim("worker-9", kinds=["crawl"])
    assert [p.title for p in ops.pending_proposals()] == ["waiting"]
    assert [p.title for p in ops.proposals(agent_id="brain")] == ["visible"]
    missions = ops.missions(status="running")
    assert [m.id for m in missions] == [accepted.mission_id]
    assert [s.status for s in missions[0].steps] == ["running", "pending"]
    assert accepted.mission_id is not None
    assert ops.mission(accepted.mission_id).title == "visible"
    assert [s.kind for s in ops.steps(status="running")] == ["crawl"]
    status = ops.status()
    assert (status.pending_proposals, status.running, status.system_enabled) == (1, {"worker-9": 1}, True)


def test_usage_is_stored_on_the_step_summed_per_day_and_priced_from_model_prices(
    ops: Ops, conn: psycopg.Connection
) -> None:
    ops.set_policy("model_prices", {"tiny-model": {"input_per_million": 3, "output_per_million": 15}}, "tester")
    ops.set_policy("budgets", {"daily_usd": 5, "agent_daily_tokens": 1500}, "tester")
    ops.propose("brain", "spends", [step("crawl"), step("analyze")])
    first = ops.claim("w", kinds=["crawl"])[0]
    spent = Usage(tokens_in=1000, tokens_out=200, model="tiny-model")  # no cost: priced from model_prices
    assert ops.complete(first.id, first.attempt, {"pages": 1}, usage=spent).status == "succeeded"
    assert ops.complete(first.id, first.attempt, {"pages": 1}, usage=spent).duplicate, "a repeat counts once"
    second = ops.claim("w", kinds=["analyze"])[0]
    priced = {"tokens_in": 500, "tokens_out": 100, "cost_usd": 0.25, "model": "other-model"}  # a mapping works too
    assert ops.fail(second.id, second.attempt, "rate limited", usage=priced).status == "queued"

    stored: dict[int, Any] = dict(conn.execute("select id, usage from ops_mission_steps order by id").fetchall())
    assert stored == {
        first.id: {"tokens_in": 1000, "tokens_out": 200, "cost_usd": 0.006, "model": "tiny-model"},
        second.id: priced,
    }
    daily = conn.execute(
        "select agent_id, tokens_in, tokens_out, cost_usd::text, steps from ops_spend_daily order by agent_id"
    ).fetchall()
    assert daily == [("*", 1500, 300, "0.25600000", 2), ("brain", 1500, 300, "0.25600000", 2)]

    spend = ops.spend()
    assert spend.budgets == {"daily_usd": 5, "agent_daily_tokens": 1500}
    day = spend.days[0].day
    assert day is not None
    assert spend.days == [
        SpendRow("*", 0.256, 1500, 300, 2, limit_usd=5, limit_tokens=None, exhausted=False, day=day),
        SpendRow("brain", 0.256, 1500, 300, 2, limit_usd=None, limit_tokens=1500, exhausted=True, day=day),
    ]
    assert spend.days[1].tokens == 1800
    [exhausted] = ops.events(type="budget:exhausted")
    assert (exhausted.agent_id, exhausted.payload["crossed_by_step"]) == ("brain", second.id)
    today = ops.status().spend_today
    assert today is not None
    assert (today.day, today.exhausted, [a.day for a in today.agents]) == (day, ["brain"], [None, None])
    assert ops.spend(days=1).days == spend.days, "today only"
    assert [s.usage for s in ops.steps(kind="crawl")] == [stored[first.id]], "the read API shows a step's usage"


def test_batch_reports_answer_each_report_and_ride_with_the_next_claim(ops: Ops) -> None:
    ops.propose("brain", "two", [step("crawl"), step("analyze")])
    ops.propose("brain", "one", [step("crawl")])
    a, b = ops.claim("w", kinds=["crawl"], max_steps=2)
    answers = ops.report(
        [
            StepResult(a.id, a.attempt, {"pages": 2}, usage=Usage(tokens_in=5)),
            StepResult(b.id, b.attempt, error="flaky", retryable=True),
            StepResult(a.id + 1000, 1),
        ]
    )
    assert [type(x) for x in answers] == [StepReport, StepReport, NotFound]
    first, second = answers[0], answers[1]
    assert isinstance(first, StepReport)
    assert isinstance(second, StepReport)
    assert (first.status, second.status) == ("succeeded", "queued")
    with pytest.raises(InvalidInput, match=r"reports\[0\]\.attempt must be from 1 to 100"):
        ops.report([StepResult(a.id, 0)])
    # The stale attempt is answered, and the step a report promoted is claimed in the same call.
    reports, claimed, busy = ops.report_and_claim("w", [StepResult(a.id, a.attempt + 1)], ["analyze"], max_steps=5)
    assert not busy
    assert isinstance(reports[0], Conflict)
    assert "is no longer running" in reports[0].message
    assert [(c.kind, c.mission_id) for c in claimed] == [("analyze", a.mission_id)]
    assert ops.report_and_claim("w", [], None, max_steps=0) == ([], [], False)


def test_report_and_claim_never_waits_for_a_busy_kind_lock_and_says_so(ops: Ops, db_url: str) -> None:
    ops.set_policy("worker_policy", {"kinds": {"crawl": {"max_running": 5}}}, "tester")
    ops.propose("brain", "two", [step("crawl"), step("crawl")])
    [first] = ops.claim("w", kinds=["crawl"])
    with psycopg.connect(db_url) as holder:  # another claimer, mid-claim: it holds the kind's lock
        holder.execute("select pg_advisory_xact_lock(hashtextextended('agent-ops:kind_limit:crawl', 0))")
        reports, claimed, busy = ops.report_and_claim("w", [StepResult(first.id, first.attempt)], ["crawl"], 5)
        assert (reports[0].status, claimed, busy) == ("succeeded", [], True)
    assert [s.position for s in ops.claim("w", kinds=["crawl"])] == [1], "claimed once the lock is free"


def test_usage_and_days_the_database_refuses_name_the_field(ops: Ops, conn: psycopg.Connection) -> None:
    ops.propose("brain", "refused", [step("crawl")])
    claimed = ops.claim("w")[0]
    with pytest.raises(InvalidInput) as bad_count:
        ops.complete(claimed.id, claimed.attempt, usage={"tokens_in": -1})
    assert bad_count.value.message == "usage.tokens_in must be from 0 to 1000000000"
    with pytest.raises(InvalidInput) as bad_model:
        ops.fail(claimed.id, claimed.attempt, "boom", usage=Usage(model="not a model"))
    assert bad_model.value.message.startswith("usage.model must match ")
    assert conn.execute("select status, usage from ops_mission_steps").fetchone() == ("running", None)
    with pytest.raises(InvalidInput, match="days must be from 1 to 366"):
        ops.spend(days=0)
    with pytest.raises(ValueError, match=r"usage\.tokens_out must be an integer of at least 0"):
        Usage(tokens_out=-5)


class Recording:
    """A transport that notes each call's parameters on their way to the real one."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_listen = inner.supports_listen
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self.sent.append((function, dict(params)))
        return self.inner.call(function, params)

    def listening(self, channel: str) -> AbstractContextManager[Poll]:
        return self.inner.listening(channel)

    def close(self) -> None:
        self.inner.close()


def test_reports_send_usage_only_when_there_is_some(ops: Ops) -> None:
    recording = Recording(ops.transport)
    client = Ops(ops.settings, transport=recording)
    client.propose("brain", "two", [step("crawl"), step("analyze")])
    first = client.claim("w", kinds=["crawl"])[0]
    client.complete(first.id, first.attempt)
    second = client.claim("w", kinds=["analyze"])[0]
    client.fail(second.id, second.attempt, "boom", usage=Usage(tokens_out=7))
    reports = {function: params for function, params in recording.sent if function.endswith("_step")}
    assert "usage" not in reports["ops_complete_step"]
    assert reports["ops_fail_step"]["usage"] == {"tokens_out": 7}


def test_status_shows_the_kind_limits(ops: Ops) -> None:
    policy = ops.get_policy("worker_policy").value
    kinds = {"crawl": {"max_running": 2, "per_minute": 10}, "analyze": {"max_running": 0}}
    ops.set_policy("worker_policy", {**policy, "kinds": kinds}, "tester")
    for title in ("a", "b"):
        ops.propose("brain", title, [step("crawl"), step("analyze")])
    assert len(ops.claim("w", kinds=["crawl"])) == 1
    limits = ops.status().limits
    assert limits == {
        "crawl": KindLimit(running=1, queued=1, max_running=2, last_minute=1, per_minute=10),
        "analyze": KindLimit(running=0, queued=0, max_running=0),
    }


def test_errors_map_to_one_hierarchy(ops: Ops) -> None:
    with pytest.raises(InvalidInput) as invalid:
        ops.propose("brain", "x", [step("a"), step("b"), step("Bad-Kind")])
    assert invalid.value.message == "steps[2].kind must match ^[a-z][a-z0-9_]{0,63}$"
    with pytest.raises(NotFound, match="mission 999999 not found"):
        ops.mission(999999)
    mission = ops.propose("brain", "m", [step("crawl")]).mission_id
    claimed = ops.claim("w")[0]
    assert mission is not None
    ops.cancel(mission, "stop")
    with pytest.raises(Conflict) as conflict:
        ops.complete(claimed.id, claimed.attempt)
    assert conflict.value.code == "PT409"
    assert conflict.value.hint == "discard this result: the step was recovered, retried or cancelled"


def test_unreachable_database_is_a_transport_error(transport_name: str) -> None:
    if transport_name == "direct":
        settings = direct_settings("postgresql://postgres@127.0.0.1:9/postgres", retries=1, timeout=1)
    else:
        settings = Settings(supabase_url="http://127.0.0.1:9", supabase_key=Secret("k"), connect_timeout=1, retries=1)
    with Ops(settings) as ops, pytest.raises(TransportError):
        ops.status()


def test_anon_and_authenticated_are_denied(transport_name: str, db_url: str, standin: StandIn) -> None:
    for role in ("anon", "authenticated"):
        if transport_name == "direct":
            settings = direct_settings(f"{db_url}?options=-c%20role%3D{role}")
        else:
            settings = rest_settings(standin, role=role)
        with Ops(settings) as ops, pytest.raises(PermissionDenied):
            ops.status()


def rpc_names_used_by_the_package() -> set[str]:
    source = (ROOT / "agent_ops" / "client.py").read_text()
    return set(re.findall(r'"(ops_[a-z_]+)"', source))


def test_every_rpc_the_package_uses_works_with_the_service_key_and_not_the_anon_key(
    db_url: str, standin: StandIn
) -> None:
    used = rpc_names_used_by_the_package()
    with Ops(rest_settings(standin)) as ops:
        proposal = ops.propose("brain", "p", [step("crawl"), step("analyze")])
        waiting = ops.propose("twitter-alt", "w1", [step("post_tweet")])
        other = ops.propose("twitter-alt", "w2", [step("post_tweet")])
        ops.approve(waiting.proposal_id, "alice")
        ops.reject(other.proposal_id, "no", "alice")
        claimed = ops.claim("w", kinds=["crawl"])[0]
        ops.extend_lease(claimed.id, claimed.attempt)
        ops.complete(claimed.id, claimed.attempt)
        second = ops.claim("w", kinds=["analyze"])[0]
        ops.release(second.id, second.attempt, "worker shutdown")
        second = ops.claim("w", kinds=["analyze"])[0]
        ops.fail(second.id, second.attempt, "boom", retryable=False)
        assert proposal.mission_id is not None
        ops.finalize(proposal.mission_id)
        assert waiting.mission_id is None
        ops.cancel(ops.missions(status="approved")[0].id, "stop")
        ops.emit_event("tweet:posted", "twitter-alt")
        ops.heartbeat()
        ops.set_policy("system", {"enabled": True}, "alice")
        ops.get_policy("system")
        ops.proposals()
        ops.missions()
        ops.mission(proposal.mission_id)
        ops.steps()
        ops.events()
        ops.status()
        ops.policies()
        ops.action_runs("heartbeat")
        ops.preview_gates(other.proposal_id)
        ops.worker_heartbeat("w", host="h", kinds=["crawl"], concurrency=1, version="0.2.0")
        ops.workers()
        ops.sign_off("w")
        ops.metrics()
        ops.metrics_history(1)
        sink = {"name": "hook", "url_env": "HOOK", "types": ["tweet:posted"]}
        ops.set_policy("notifications", {"enabled": True, "sinks": [sink]}, "alice")
        ops.emit_event("tweet:posted", "twitter-alt")
        [note] = ops.claim_notifications("deliverer")
        ops.report_notification(note.id, note.attempt, True, http_status=200)
        ops.notifications(status="sent")
        ops.trigger_rules()
        rule = ops.trigger_rule("mission_failed").definition()
        ops.set_trigger_rule({**rule, "cooldown_minutes": 30}, "alice")
        ops.set_trigger_enabled("mission_failed", True, "alice")
        ops.preview_trigger_rule("mission_failed")
        ops.delete_trigger_rule("mission_failed", "alice")
        ops.spend(days=3)
        ops.propose("brain", "batch", [step("crawl")])
        [batched] = ops.claim("w", kinds=["crawl"])
        ops.report([StepResult(batched.id, batched.attempt)])
        ops.report_and_claim("w", [StepResult(batched.id, batched.attempt)], ["crawl"], 1)
    assert used <= set(standin.calls), f"not exercised: {sorted(used - set(standin.calls))}"

    with Ops(rest_settings(standin, role="anon")) as anon:
        for function in sorted(used):
            with pytest.raises(PermissionDenied) as denied:
                anon.call(function, SAMPLE_PARAMS[function])
            assert (denied.value.status, denied.value.code) == (401, "42501"), function


# Well-formed arguments for every RPC, so a refusal can only come from the missing privilege.
SAMPLE_PARAMS: dict[str, dict[str, object]] = {
    "ops_create_proposal": {"proposal": {"agent_id": "a", "title": "t", "steps": [{"kind": "crawl"}]}},
    "ops_approve_proposal": {"proposal_id": 1, "decided_by": "a"},
    "ops_reject_proposal": {"proposal_id": 1, "reason": "r", "decided_by": "a"},
    "ops_claim_next_step": {"worker_id": "w"},
    "ops_complete_step": {"step_id": 1, "attempt": 1},
    "ops_fail_step": {"step_id": 1, "attempt": 1, "error": "e"},
    "ops_report_steps": {"reports": [{"step_id": 1, "attempt": 1}]},
    "ops_report_and_claim": {"worker_id": "w", "reports": None, "max_steps": 1},
    "ops_extend_lease": {"step_id": 1, "attempt": 1},
    "ops_release_step": {"step_id": 1, "attempt": 1, "reason": "r"},
    "ops_finalize_mission": {"mission_id": 1},
    "ops_cancel_mission": {"mission_id": 1, "reason": "r"},
    "ops_emit_event": {"event": {"type": "x:y", "agent_id": "a"}},
    "ops_heartbeat": {},
    "ops_get_policy": {"key": "system"},
    "ops_set_policy": {"key": "system", "value": {"enabled": True}, "updated_by": "a"},
    "ops_list_proposals": {},
    "ops_list_missions": {},
    "ops_get_mission": {"mission_id": 1},
    "ops_list_steps": {},
    "ops_list_events": {},
    "ops_status": {},
    "ops_list_policy": {},
    "ops_list_action_runs": {"action": "heartbeat"},
    "ops_preview_gates": {"proposal_id": 1},
    "ops_worker_heartbeat": {"worker": {"worker_id": "w"}},
    "ops_worker_sign_off": {"worker_id": "w"},
    "ops_list_workers": {},
    "ops_metrics": {},
    "ops_metrics_history": {"hours": 1},
    "ops_claim_notifications": {"deliverer": "d"},
    "ops_report_notification": {"id": 1, "attempt": 1, "delivered": True},
    "ops_list_notifications": {},
    "ops_list_trigger_rules": {},
    "ops_get_trigger_rule": {"name": "mission_failed"},
    "ops_set_trigger_rule": {
        "rule": {
            "name": "r",
            "trigger_event": "schedule",
            "action_config": {"agent_id": "a", "title": "t", "steps": [{"kind": "noop"}]},
        },
        "updated_by": "a",
    },
    "ops_set_trigger_enabled": {"name": "mission_failed", "enabled": True, "updated_by": "a"},
    "ops_delete_trigger_rule": {"name": "mission_failed", "updated_by": "a"},
    "ops_preview_trigger_rule": {"name": "mission_failed"},
    "ops_list_spend": {"days": 7},
}


@contextmanager
def losing_one_answer(transport_name: str, db_url: str, function: str) -> Iterator[tuple[Ops, Callable[[], None]]]:
    """An Ops client and an `arm()` that makes the next `function` call commit but lose its answer."""
    if transport_name == "direct":
        info = psycopg.conninfo.conninfo_to_dict(db_url)
        proxy = FlakyProxy(str(info["host"]), int(str(info["port"])))
        through_proxy = server_url("postgres", str(info["password"]), "127.0.0.1", proxy.port, str(info["dbname"]))
        with Ops(direct_settings(through_proxy)) as ops:
            ops.status()  # a live pooled connection first, so only the armed call's answer is lost
            yield ops, proxy.drop_next_response
        proxy.close()
        return
    server = StandIn(db_url)
    with Ops(rest_settings(server)) as ops:
        yield ops, lambda: server.drop_response_once(function)
    server.close()


def test_a_dropped_connection_is_retried_and_never_duplicates_a_proposal(transport_name: str, db_url: str) -> None:
    with losing_one_answer(transport_name, db_url, "ops_create_proposal") as (ops, arm):
        arm()
        result = ops.propose("brain", "exactly once", [step("analyze")])
        assert result.duplicate, "the retry found the first, committed proposal"
    with psycopg.connect(db_url) as conn:
        count = conn.execute("select count(*) from ops_mission_proposals where title = 'exactly once'").fetchone()
    assert count == (1,)


def test_reads_are_retried_after_a_dropped_connection(transport_name: str, db_url: str) -> None:
    with losing_one_answer(transport_name, db_url, "ops_status") as (ops, arm):
        arm()
        assert ops.status().system_enabled


def test_a_lost_claim_is_not_retried_and_its_step_is_recovered_after_the_lease(
    transport_name: str, db_url: str, conn: psycopg.Connection
) -> None:
    with losing_one_answer(transport_name, db_url, "ops_claim_next_step") as (ops, arm):
        ops.propose("brain", "lost claim", [step("crawl")])
        arm()
        with pytest.raises(TransportError):
            ops.claim("worker-x", lease_seconds=1)
        row = conn.execute("select status, attempt, reserved_by from ops_mission_steps").fetchone()
        assert row == ("running", 1, "worker-x"), "the claim committed once and was not repeated"
        conn.execute("update ops_mission_steps set lease_expires_at = now() - interval '1 second'")
        assert ops.call("ops_recover_stale_steps")["requeued"] == 1
    recovered = conn.execute("select status, attempt, reserved_by, last_error like 'Stale:%' from ops_mission_steps")
    assert recovered.fetchone() == ("queued", 1, None, True), "requeued for another worker, nothing lost"


def test_the_stand_in_rejects_unknown_parameters_like_postgrest(standin: StandIn) -> None:
    with Ops(rest_settings(standin)) as ops, pytest.raises(NotFound) as raised:
        ops.call("ops_get_policy", {"keyy": "system"})
    assert raised.value.code == "PGRST202"
    assert raised.value.status == 404
