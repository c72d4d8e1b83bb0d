"""`Ops`: the agent-ops API in Python. Each method is one ops_* SQL function; no rule lives here.

Retries (tenacity, on TransportError only) are limited to calls whose repeat is harmless:
- reads;
- step reports (complete, fail, extend) and finalize: fenced by attempt and idempotent in SQL (a repeated
  report's usage counts once);
- proposals: the client adds a dedupe key when the caller gives none, so a POST that committed but lost
  its response comes back as the same proposal (`duplicate: true`) instead of a second one.
Never retried: claims (a lost claim response leaves its steps running under this worker until the lease
expires; stale recovery then requeues them, so nothing is lost, but a blind retry would claim more work
while those wait; notification claims likewise), approve/reject/cancel (a repeat answers PT409), events
and the heartbeat.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agent_ops.config import Settings
from agent_ops.errors import OpsError, TransportError, error_class
from agent_ops.models import (
    ActionRun,
    ClaimedNotification,
    ClaimedStep,
    EmittedEvent,
    Event,
    GatePreview,
    HeartbeatResult,
    Lease,
    Metrics,
    MetricsHistory,
    Mission,
    MissionOutcome,
    Notification,
    NotificationReport,
    Policy,
    Proposal,
    ProposalResult,
    SignOff,
    Spend,
    Status,
    Step,
    StepReport,
    StepResult,
    TriggerPreview,
    TriggerRule,
    TriggerRuleChange,
    Usage,
    Worker,
)
from agent_ops.transports import Transport, make_transport

log = logging.getLogger("agent_ops")
T = TypeVar("T")


def step(
    kind: str, payload: Mapping[str, Any] | None = None, depends_on: Sequence[int] | None = None
) -> dict[str, Any]:
    """One proposed step, for `Ops.propose`."""
    spec: dict[str, Any] = {"kind": kind}
    if payload is not None:
        spec["payload"] = dict(payload)
    if depends_on is not None:
        spec["depends_on"] = list(depends_on)
    return spec


def _add_usage(params: dict[str, Any], usage: Usage | Mapping[str, Any] | None) -> None:
    """Sends `usage` only when there is one, so a report without it is the call it always was."""
    if usage is not None:
        params["usage"] = usage.to_json() if isinstance(usage, Usage) else dict(usage)


class ReportAndClaim(NamedTuple):
    """What `Ops.report_and_claim` answers: one answer per report, the claimed steps, and whether a limited
    kind was skipped because its lock was busy."""

    reports: list[StepReport | OpsError]
    claimed: list[ClaimedStep]
    busy: bool = False


def _report_answer(answer: dict[str, Any]) -> StepReport | OpsError:
    """One answer of ops_report_steps: the report, or the error the single call would have raised."""
    error = answer.get("error")
    if error is None:
        return StepReport.from_json(answer)
    return error_class(error.get("code"))(error.get("message", "report refused"), code=error.get("code"))


class Ops:
    """The agent-ops API over PostgREST or a direct Postgres connection (see `Settings`)."""

    def __init__(self, settings: Settings | None = None, *, transport: Transport | None = None) -> None:
        self.settings = settings or Settings.load()
        self._transport = transport or make_transport(self.settings)

    @property
    def transport(self) -> Transport:
        return self._transport

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Ops:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.settings.retries),  # the first attempt already failed
            wait=wait_exponential(multiplier=0.2, max=2.0) + wait_random(0, 0.2),
            retry=retry_if_exception_type(TransportError),
            before_sleep=before_sleep_log(log, logging.DEBUG),
            reraise=True,
        )

    def call(self, function: str, params: Mapping[str, Any] | None = None, *, retry: bool = False) -> Any:
        """Call any ops_* function by name; `retry` only for calls whose repeat is harmless."""
        arguments = dict(params or {})
        if not retry:
            return self._transport.call(function, arguments)
        try:
            return self._transport.call(function, arguments)
        except TransportError:
            # The common case stays free of tenacity's bookkeeping; only a failed call enters the retry loop.
            return self._retrying()(self._transport.call, function, arguments)

    def _one(self, build: Callable[[dict[str, Any]], T], function: str, params: Mapping[str, Any], *, retry: bool) -> T:
        return build(self.call(function, params, retry=retry))

    # -- proposals --------------------------------------------------------------------------------------------

    def propose(
        self,
        agent_id: str,
        title: str,
        steps: Sequence[Mapping[str, Any]],
        *,
        source: str = "api",
        description: str | None = None,
        dedupe_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ProposalResult:
        proposal: dict[str, Any] = {
            "agent_id": agent_id,
            "title": title,
            "steps": [dict(s) for s in steps],
            "source": source,
            # Makes a retried POST land on the same proposal.
            "dedupe_key": dedupe_key or f"client:{uuid.uuid4()}",
        }
        if description is not None:
            proposal["description"] = description
        if metadata is not None:
            proposal["metadata"] = dict(metadata)
        return self._one(ProposalResult.from_json, "ops_create_proposal", {"proposal": proposal}, retry=True)

    def propose_raw(self, proposal: Mapping[str, Any]) -> ProposalResult:
        """Send a proposal document as is (CLI JSON input); a dedupe key is added when it has none."""
        document = dict(proposal)
        document.setdefault("dedupe_key", f"client:{uuid.uuid4()}")
        return self._one(ProposalResult.from_json, "ops_create_proposal", {"proposal": document}, retry=True)

    def approve(self, proposal_id: int, decided_by: str) -> ProposalResult:
        params = {"proposal_id": proposal_id, "decided_by": decided_by}
        return self._one(ProposalResult.from_json, "ops_approve_proposal", params, retry=False)

    def reject(self, proposal_id: int, reason: str, decided_by: str) -> ProposalResult:
        params = {"proposal_id": proposal_id, "reason": reason, "decided_by": decided_by}
        return self._one(ProposalResult.from_json, "ops_reject_proposal", params, retry=False)

    # -- steps ------------------------------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        kinds: Sequence[str] | None = None,
        max_steps: int = 1,
        lease_seconds: int | None = None,
    ) -> list[ClaimedStep]:
        params = {
            "worker_id": worker_id,
            "kinds": list(kinds) if kinds is not None else None,
            "max_steps": max_steps,
            "lease_seconds": lease_seconds,
        }
        return [ClaimedStep.from_json(s) for s in self.call("ops_claim_next_step", params)]

    def complete(
        self,
        step_id: int,
        attempt: int,
        output: Any = None,
        *,
        usage: Usage | Mapping[str, Any] | None = None,
        retry: bool = True,
    ) -> StepReport:
        """`usage` is what the attempt used (see `Usage`): stored on the step and added to today's spend.
        `retry=False` for callers that retry on their own schedule (the worker)."""
        params: dict[str, Any] = {"step_id": step_id, "attempt": attempt, "output": {} if output is None else output}
        _add_usage(params, usage)
        return self._one(StepReport.from_json, "ops_complete_step", params, retry=retry)

    def fail(
        self,
        step_id: int,
        attempt: int,
        error: str,
        retryable: bool = True,
        *,
        usage: Usage | Mapping[str, Any] | None = None,
        retry: bool = True,
    ) -> StepReport:
        """`usage` is what the failed attempt used (see `Usage`): a failure spends too.
        `retry=False` for callers that retry on their own schedule (the worker)."""
        params: dict[str, Any] = {"step_id": step_id, "attempt": attempt, "error": error, "retryable": retryable}
        _add_usage(params, usage)
        return self._one(StepReport.from_json, "ops_fail_step", params, retry=retry)

    def report(self, results: Sequence[StepResult], *, retry: bool = True) -> list[StepReport | OpsError]:
        """Up to 100 reports in one round trip (ops_report_steps), each fenced by its attempt like `complete` and
        `fail`. One answer per report, in order: its StepReport, or the Conflict / NotFound the single call would
        have raised (a stale attempt does not sink the others). Invalid input raises InvalidInput and writes
        nothing. `retry=False` for callers that retry on their own schedule (the worker)."""
        params = {"reports": [r.to_json() for r in results]}
        return [_report_answer(a) for a in self.call("ops_report_steps", params, retry=retry)]

    def report_and_claim(
        self,
        worker_id: str,
        results: Sequence[StepResult],
        kinds: Sequence[str] | None = None,
        max_steps: int = 1,
        lease_seconds: int | None = None,
    ) -> ReportAndClaim:
        """`report`, then `claim` up to `max_steps` (0: none) in the same transaction and round trip
        (ops_report_and_claim). `busy`: a limited kind was skipped because another claimer held its lock (this
        call never waits for one): claim again, without reports, to wait for it. Not retried: a lost answer may
        have claimed steps (see the worker's orphans)."""
        params = {
            "worker_id": worker_id,
            "reports": [r.to_json() for r in results] or None,
            "kinds": list(kinds) if kinds is not None else None,
            "max_steps": max_steps,
            "lease_seconds": lease_seconds,
        }
        data = self.call("ops_report_and_claim", params)
        return ReportAndClaim(
            [_report_answer(a) for a in data["reports"]],
            [ClaimedStep.from_json(s) for s in data["claimed"]],
            bool(data.get("busy")),
        )

    def extend_lease(
        self, step_id: int, attempt: int, lease_seconds: int | None = None, *, retry: bool = True
    ) -> Lease:
        """`retry=False` for callers that retry on their own schedule (the worker's lease keeper)."""
        params = {"step_id": step_id, "attempt": attempt, "lease_seconds": lease_seconds}
        return self._one(Lease.from_json, "ops_extend_lease", params, retry=retry)

    def release(self, step_id: int, attempt: int, reason: str, *, retry: bool = True) -> StepReport:
        """Hand a running step back (graceful shutdown): queued at once, the attempt not counted."""
        params = {"step_id": step_id, "attempt": attempt, "reason": reason}
        return self._one(StepReport.from_json, "ops_release_step", params, retry=retry)

    # -- workers ----------------------------------------------------------------------------------------------

    def worker_heartbeat(
        self,
        worker_id: str,
        *,
        host: str | None = None,
        kinds: Sequence[str] | None = None,
        concurrency: int | None = None,
        version: str | None = None,
        stopping: bool | None = None,
        retry: bool = True,
    ) -> Worker:
        """A worker's presence while it has nothing to claim (claims refresh it too); None keeps what it
        announced before. Returns the worker as `workers()` shows it. Harmless to repeat."""
        worker: dict[str, Any] = {"worker_id": worker_id}
        optional = {
            "host": host,
            "kinds": list(kinds) if kinds is not None else None,
            "concurrency": concurrency,
            "version": version,
            "stopping": stopping,
        }
        worker.update({k: v for k, v in optional.items() if v is not None})
        return self._one(Worker.from_json, "ops_worker_heartbeat", {"worker": worker}, retry=retry)

    def sign_off(self, worker_id: str, *, retry: bool = True) -> SignOff:
        """A clean stop: the worker leaves the list at once (`worker:left`). Harmless to repeat."""
        return self._one(SignOff.from_json, "ops_worker_sign_off", {"worker_id": worker_id}, retry=retry)

    # -- missions ---------------------------------------------------------------------------------------------

    def finalize(self, mission_id: int) -> MissionOutcome:
        return self._one(MissionOutcome.from_json, "ops_finalize_mission", {"mission_id": mission_id}, retry=True)

    def cancel(self, mission_id: int, reason: str) -> MissionOutcome:
        params = {"mission_id": mission_id, "reason": reason}
        return self._one(MissionOutcome.from_json, "ops_cancel_mission", params, retry=False)

    # -- events, heartbeat, policy ----------------------------------------------------------------------------

    def emit_event(
        self,
        type: str,
        agent_id: str,
        *,
        tags: Sequence[str] | None = None,
        title: str | None = None,
        summary: str | None = None,
        payload: Mapping[str, Any] | None = None,
        source: str | None = None,
        proposal_id: int | None = None,
        mission_id: int | None = None,
        step_id: int | None = None,
    ) -> EmittedEvent:
        event: dict[str, Any] = {"type": type, "agent_id": agent_id}
        optional = {
            "tags": list(tags) if tags is not None else None,
            "title": title,
            "summary": summary,
            "payload": dict(payload) if payload is not None else None,
            "source": source,
            "proposal_id": proposal_id,
            "mission_id": mission_id,
            "step_id": step_id,
        }
        event.update({k: v for k, v in optional.items() if v is not None})
        return self._one(EmittedEvent.from_json, "ops_emit_event", {"event": event}, retry=False)

    def heartbeat(self) -> HeartbeatResult:
        return self._one(HeartbeatResult.from_json, "ops_heartbeat", {}, retry=False)

    def get_policy(self, key: str) -> Policy:
        return self._one(Policy.from_json, "ops_get_policy", {"key": key}, retry=True)

    def set_policy(self, key: str, value: Any, updated_by: str) -> Policy:
        """`value` is any JSON; ops_set_policy validates it for the key (InvalidInput names what is wrong)."""
        params = {"key": key, "value": dict(value) if isinstance(value, Mapping) else value, "updated_by": updated_by}
        return self._one(Policy.from_json, "ops_set_policy", params, retry=True)

    def policies(self) -> list[Policy]:
        """Every policy key with its value, in key order."""
        return [Policy.from_json(p) for p in self.call("ops_list_policy", {}, retry=True)]

    # -- reads for status views -------------------------------------------------------------------------------

    def proposals(self, status: str | None = None, agent_id: str | None = None, limit: int = 50) -> list[Proposal]:
        params = {"status": status, "agent_id": agent_id, "max_rows": limit}
        return [Proposal.from_json(p) for p in self.call("ops_list_proposals", params, retry=True)]

    def pending_proposals(self, limit: int = 50) -> list[Proposal]:
        return self.proposals(status="pending", limit=limit)

    def missions(self, status: str | None = None, agent_id: str | None = None, limit: int = 50) -> list[Mission]:
        params = {"status": status, "agent_id": agent_id, "max_rows": limit}
        return [Mission.from_json(m) for m in self.call("ops_list_missions", params, retry=True)]

    def mission(self, mission_id: int) -> Mission:
        return self._one(Mission.from_json, "ops_get_mission", {"mission_id": mission_id}, retry=True)

    def steps(
        self, status: str | None = None, kind: str | None = None, mission_id: int | None = None, limit: int = 100
    ) -> list[Step]:
        params = {"status": status, "kind": kind, "mission_id": mission_id, "max_rows": limit}
        return [Step.from_json(s) for s in self.call("ops_list_steps", params, retry=True)]

    def events(
        self,
        type: str | None = None,
        tag: str | None = None,
        agent_id: str | None = None,
        mission_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Newest first; with `after_id`, the events after it, oldest first (for following the stream)."""
        params = {
            "type": type,
            "tag": tag,
            "agent_id": agent_id,
            "mission_id": mission_id,
            "after_id": after_id,
            "max_rows": limit,
        }
        return [Event.from_json(e) for e in self.call("ops_list_events", params, retry=True)]

    def status(self) -> Status:
        return self._one(Status.from_json, "ops_status", {}, retry=True)

    def spend(self, days: int = 7) -> Spend:
        """Spend per UTC day and agent over the last `days` (1 to 366, today included), with policy `budgets`."""
        return self._one(Spend.from_json, "ops_list_spend", {"days": days}, retry=True)

    def workers(self) -> list[Worker]:
        """Every worker the database knows, live ones first, with its kinds and the steps it runs now."""
        return [Worker.from_json(w) for w in self.call("ops_list_workers", {}, retry=True)]

    def metrics(self) -> Metrics:
        """Everything /metrics shows, in one read."""
        return self._one(Metrics.from_json, "ops_metrics", {}, retry=True)

    def metrics_history(self, hours: int = 24) -> MetricsHistory:
        """The last `hours` (1 to 192) minute by minute, from the heartbeat's rollup: the console's charts."""
        return self._one(MetricsHistory.from_json, "ops_metrics_history", {"hours": hours}, retry=True)

    def action_runs(self, action: str | None = None, limit: int = 20) -> list[ActionRun]:
        """Recorded runs (heartbeats, …), newest first."""
        params = {"action": action, "max_rows": limit}
        return [ActionRun.from_json(a) for a in self.call("ops_list_action_runs", params, retry=True)]

    def preview_gates(self, proposal_id: int) -> GatePreview:
        """What approving this pending proposal would meet at the gates now; approval checks again."""
        return self._one(GatePreview.from_json, "ops_preview_gates", {"proposal_id": proposal_id}, retry=True)

    # -- notifications ----------------------------------------------------------------------------------------

    def claim_notifications(self, deliverer: str, max_items: int = 10) -> list[ClaimedNotification]:
        """Due outbox rows under a lease, for a deliverer (agent_ops/notify.py). Never retried: a lost answer
        leaves its rows leased until they expire, then they are claimed again."""
        params = {"deliverer": deliverer, "max_items": max_items}
        return [ClaimedNotification.from_json(n) for n in self.call("ops_claim_notifications", params)]

    def report_notification(
        self,
        notification_id: int,
        attempt: int,
        delivered: bool,
        *,
        http_status: int | None = None,
        error: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> NotificationReport:
        """Settle one attempt: sent, or retried (after `retry_after_seconds` when the sink said), or dead.
        Fenced by attempt and idempotent (a repeat answers `duplicate`), so retried. `error` must hold no
        secret: the deliverer redacts the sink's URL first."""
        params = {
            "id": notification_id,
            "attempt": attempt,
            "delivered": delivered,
            "http_status": http_status,
            "error": error,
            "retry_after_seconds": retry_after_seconds,
        }
        return self._one(NotificationReport.from_json, "ops_report_notification", params, retry=True)

    def notifications(self, status: str | None = None, limit: int = 50) -> list[Notification]:
        """The notification outbox, newest first; `status="dead"` for the dead letters."""
        params = {"status": status, "max_rows": limit}
        return [Notification.from_json(n) for n in self.call("ops_list_notifications", params, retry=True)]

    # -- trigger rules ----------------------------------------------------------------------------------------

    def trigger_rules(self) -> list[TriggerRule]:
        """Every trigger rule by name, with its bookkeeping and 5 latest firings."""
        return [TriggerRule.from_json(r) for r in self.call("ops_list_trigger_rules", {}, retry=True)]

    def trigger_rule(self, name: str) -> TriggerRule:
        """One rule with its 20 latest firings; NotFound when there is none."""
        return self._one(TriggerRule.from_json, "ops_get_trigger_rule", {"name": name}, retry=True)

    def set_trigger_rule(self, rule: Mapping[str, Any], updated_by: str) -> TriggerRuleChange:
        """Create or update the rule named in `rule` (see TRIGGER_RULE_FIELDS); InvalidInput names what is wrong.
        The same document again changes nothing, so a retry is harmless."""
        params = {"rule": dict(rule), "updated_by": updated_by}
        return self._one(TriggerRuleChange.from_json, "ops_set_trigger_rule", params, retry=True)

    def set_trigger_enabled(self, name: str, enabled: bool, updated_by: str) -> TriggerRuleChange:
        """Switch a rule on or off (switching on checks it first). Harmless to repeat."""
        params = {"name": name, "enabled": enabled, "updated_by": updated_by}
        return self._one(TriggerRuleChange.from_json, "ops_set_trigger_enabled", params, retry=True)

    def delete_trigger_rule(self, name: str, updated_by: str) -> TriggerRuleChange:
        """Delete a rule (trigger:deleted keeps its definition). Not retried: a repeat answers NotFound."""
        params = {"name": name, "updated_by": updated_by}
        return self._one(TriggerRuleChange.from_json, "ops_delete_trigger_rule", params, retry=False)

    def preview_trigger_rule(self, name: str | None = None, *, rule: Mapping[str, Any] | None = None) -> TriggerPreview:
        """The dry run: what the saved rule `name`, or the draft document `rule`, would propose now. Writes nothing."""
        params = {"name": name, "rule": dict(rule) if rule is not None else None}
        return self._one(TriggerPreview.from_json, "ops_preview_trigger_rule", params, retry=True)
