"""Small typed results of the ops_* functions. Each is built from the function's JSON with `from_json`.

The statuses and proposal sources are Literal types, each the set its table's CHECK constraint allows
(supabase/migrations/); the tuples of their values (for argparse choices, the console's filters) are derived
from them, so each vocabulary is written once on the Python side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Self, get_args

# A mission or step that has finished: nothing changes it any more.
FinishedStatus = Literal["succeeded", "failed", "cancelled"]
ProposalStatus = Literal["pending", "accepted", "rejected"]
ProposalSource = Literal["api", "agent", "human", "trigger", "reaction"]
MissionStatus = Literal["approved", "running", FinishedStatus]
StepStatus = Literal["pending", "queued", "running", FinishedStatus]
ActionRunStatus = Literal["running", "succeeded", "failed"]
NotificationStatus = Literal["pending", "sending", "sent", "dead"]
NotificationFormat = Literal["slack", "discord", "json"]
TriggerChecker = Literal["event", "schedule", "threshold", "absence", "custom"]

FINISHED_STATUSES: tuple[FinishedStatus, ...] = get_args(FinishedStatus)
PROPOSAL_STATUSES: tuple[ProposalStatus, ...] = get_args(ProposalStatus)
PROPOSAL_SOURCES: tuple[ProposalSource, ...] = get_args(ProposalSource)
MISSION_STATUSES: tuple[MissionStatus, ...] = get_args(MissionStatus)
STEP_STATUSES: tuple[StepStatus, ...] = get_args(StepStatus)
ACTION_RUN_STATUSES: tuple[ActionRunStatus, ...] = get_args(ActionRunStatus)
NOTIFICATION_STATUSES: tuple[NotificationStatus, ...] = get_args(NotificationStatus)
TRIGGER_CHECKERS: tuple[TriggerChecker, ...] = get_args(TriggerChecker)


def parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


_FIELD_PLANS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _field_plan(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, is a datetime) for each field of a result dataclass, worked out once per class."""
    plan = _FIELD_PLANS.get(cls)
    if plan is None:
        plan = _FIELD_PLANS[cls] = tuple((f.name, "datetime" in str(f.type)) for f in fields(cls))
    return plan


class _FromJson:
    """`from_json` for dataclasses: known keys only; fields annotated with datetime are parsed."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for name, is_time in _field_plan(cls):
            if name in data:
                values[name] = parse_time(data[name]) if is_time else data[name]
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ProposalResult(_FromJson):
    proposal_id: int
    status: ProposalStatus
    mission_id: int | None = None
    reason: str | None = None
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass(frozen=True, slots=True)
class ClaimedStep(_FromJson):
    id: int
    mission_id: int
    agent_id: str
    kind: str
    position: int
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_expires_at: datetime
    priority: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    reserved_at: datetime | None = None
    lease_seconds: float | None = None  # the lease granted, measured on the database's clock
    deadline: datetime | None = None  # when this attempt must end (worker_policy timeout_seconds after the claim)
    timeout_seconds: int | None = None  # deadline - reserved_at: how long this attempt may run


@dataclass(frozen=True, slots=True)
class StepReport(_FromJson):
    step_id: int
    attempt: int
    status: StepStatus
    mission_id: int
    mission_status: MissionStatus | None = None
    duplicate: bool = False
    retry_at: datetime | None = None
    attempts_left: int | None = None


@dataclass(frozen=True, slots=True)
class Lease(_FromJson):
    step_id: int
    attempt: int
    lease_expires_at: datetime
    lease_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class MissionOutcome(_FromJson):
    mission_id: int
    status: MissionStatus
    finalized: bool
    finalized_at: datetime | None = None
    reason: str | None = None
    cancelled_steps: int | None = None


@dataclass(frozen=True, slots=True)
class EmittedEvent(_FromJson):
    event_id: int
    type: str
    tags: list[str]
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy(_FromJson):
    key: str
    value: Any
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    ok: bool
    skipped: str | None
    run_id: int | None
    duration_ms: int | None
    errors: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeartbeatResult:
        return cls(
            ok=bool(data.get("ok", "skipped" in data)),
            skipped=data.get("skipped"),
            run_id=data.get("run_id"),
            duration_ms=data.get("duration_ms"),
            errors=list(data.get("errors") or []),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Proposal(_FromJson):
    id: int
    agent_id: str
    title: str
    status: ProposalStatus
    source: ProposalSource
    steps: list[dict[str, Any]]
    created_at: datetime
    description: str | None = None
    dedupe_key: str | None = None
    reason: str | None = None
    auto_approved: bool = False
    decided_by: str | None = None
    decided_at: datetime | None = None
    mission_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step(_FromJson):
    id: int
    mission_id: int
    position: int
    kind: str
    status: StepStatus
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    created_at: datetime
    output: Any = None
    last_error: str | None = None
    depends_on: list[int] = field(default_factory=list)
    priority: int = 0
    run_after: datetime | None = None
    reserved_by: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: dict[str, Any] | None = None  # what its reported attempts spent (tokens_in, tokens_out, cost_usd, model)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Mission:
    id: int
    proposal_id: int
    agent_id: str
    title: str
    status: MissionStatus
    created_at: datetime
    steps: list[Step]
    reason: str | None = None
    started_at: datetime | None = None
    finalized_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mission:
        return cls(
            id=data["id"],
            proposal_id=data["proposal_id"],
            agent_id=data["agent_id"],
            title=data["title"],
            status=data["status"],
            created_at=parse_time(data["created_at"]) or datetime.min,
            steps=[Step.from_json(s) for s in data.get("steps") or []],
            reason=data.get("reason"),
            started_at=parse_time(data.get("started_at")),
            finalized_at=parse_time(data.get("finalized_at")),
        )


@dataclass(frozen=True, slots=True)
class Event(_FromJson):
    id: int
    type: str
    agent_id: str
    tags: list[str]
    created_at: datetime
    source: str = "system"
    title: str = ""
    summary: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    proposal_id: int | None = None
    mission_id: int | None = None
    step_id: int | None = None


@dataclass(frozen=True, slots=True)
class ActionRun(_FromJson):
    """One recorded run of a periodic action (`ops_action_runs`), e.g. a heartbeat with its per-task result."""

    id: int
    action: str
    status: ActionRunStatus
    started_at: datetime
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_ms: int | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GatePreview(_FromJson):
    """What the gates would say to a pending proposal now (`passes` is None once it is decided)."""

    proposal_id: int
    status: ProposalStatus
    passes: bool | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Worker(_FromJson):
    """A worker the database knows (`ops_list_workers`, `ops_status().workers`): its kinds, the steps it runs
    now (`running`: step_id, mission_id, kind, attempt, started_at) and when it was last seen."""

    worker_id: str
    kinds: list[str]
    last_seen_at: datetime
    live: bool = True
    host: str | None = None
    concurrency: int | None = None
    version: str | None = None
    started_at: datetime | None = None
    stopping: bool = False
    running: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Metrics(_FromJson):
    """Everything /metrics shows, in one read (`ops_metrics()`); see its migration for each key."""

    generated_at: datetime
    system_enabled: bool
    buckets: list[float]
    kinds: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    running_by_worker: dict[str, int]
    heartbeat: dict[str, Any]
    notifications: dict[str, Any]
    rollup: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MetricsHistory(_FromJson):
    """The console's charts (`ops_metrics_history`): one value per minute from `from_`, oldest first.

    A None in `succeeded`, `failed`, `retried`, `heartbeats` and `heartbeat_failures` is a minute the rollup
    has not closed yet; in `heartbeat_ms_max`, also a minute without a heartbeat.
    """

    from_: datetime
    minutes: int
    step_seconds: int
    queued: dict[str, list[int]]
    succeeded: list[int | None]
    failed: list[int | None]
    retried: list[int | None]
    heartbeats: list[int | None]
    heartbeat_failures: list[int | None]
    heartbeat_ms_max: list[int | None]
    rolled_until: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return super(MetricsHistory, cls).from_json({**data, "from_": data["from"]})


@dataclass(frozen=True, slots=True)
class Usage(_FromJson):
    """What a step's attempt used, as `Ops.complete` / `Ops.fail` report it (ops_complete_step / ops_fail_step
    `usage`); every field is optional. Without `cost_usd` the database prices the tokens from policy
    `model_prices` by `model` (an unpriced model costs 0 USD and still counts its tokens). The database checks
    the ranges (PT400 naming the field); this only refuses what can never be right (a wrong type, a negative).
    """

    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        for name in ("tokens_in", "tokens_out"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"usage.{name} must be an integer of at least 0, not {value!r}")
        cost = self.cost_usd
        if cost is not None and (
            not isinstance(cost, (int, float)) or isinstance(cost, bool) or not 0 <= cost < float("inf")
        ):
            raise ValueError(f"usage.cost_usd must be a number of at least 0, not {cost!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"usage.model must be a non-empty string, not {self.model!r}")

    def __add__(self, other: Usage) -> Usage:
        """Two reports of one attempt together: tokens add up; the later model wins (as the database sums a step's
        attempts); cost_usd is kept only when both give one, else it is left to the database to price."""

        def plus(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else a + b

        return Usage(
            tokens_in=plus(self.tokens_in, other.tokens_in),
            tokens_out=plus(self.tokens_out, other.tokens_out),
            cost_usd=None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd,
            model=other.model or self.model,
        )

    def to_json(self) -> dict[str, Any]:
        """The `usage` document: the fields that are set."""
        return {name: value for name in _USAGE_FIELDS if (value := getattr(self, name)) is not None}


_USAGE_FIELDS = ("tokens_in", "tokens_out", "cost_usd", "model")
# The agent_id of the spend rows that count every agent together (the global budget's).
ALL_AGENTS = "*"


@dataclass(frozen=True, slots=True)
class SpendRow(_FromJson):
    """One agent's spend on one UTC day (`agent_id` '*': every agent together) with its daily limits (None: no
    limit) and whether it reached one (`exhausted`: its spending steps are held and its proposals refused).
    `day` is the ISO date; None in `ops_status().spend_today`, whose rows are all today."""

    agent_id: str
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    steps: int = 0
    limit_usd: float | None = None
    limit_tokens: int | None = None
    exhausted: bool = False
    day: str | None = None

    @property
    def tokens(self) -> int:
        """What the token limits count: tokens in and out together."""
        return self.tokens_in + self.tokens_out


@dataclass(frozen=True, slots=True)
class Spend:
    """`ops_list_spend(days)`: policy `budgets` (None: no budget) and the spend per UTC day and agent, newest
    day first and, within a day, every agent together ('*') first."""

    budgets: dict[str, Any] | None
    days: list[SpendRow]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spend:
        return cls(budgets=data.get("budgets"), days=[SpendRow.from_json(d) for d in data.get("days") or []])


@dataclass(frozen=True, slots=True)
class SpendToday:
    """`ops_status().spend_today`: today's spend per agent ('*' first), with policy `budgets`."""

    day: str
    budgets: dict[str, Any] | None
    agents: list[SpendRow]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpendToday:
        return cls(
            day=str(data["day"]),
            budgets=data.get("budgets"),
            agents=[SpendRow.from_json(a) for a in data.get("agents") or []],
        )

    @property
    def exhausted(self) -> list[str]:
        """The agents whose budget is exhausted today ('*': the global one)."""
        return [a.agent_id for a in self.agents if a.exhausted]


@dataclass(frozen=True, slots=True)
class KindLimit(_FromJson):
    """`ops_status().limits[kind]`: a step kind with fleet-wide limits (worker_policy.kinds.<kind>): steps running
    now against `max_running`, hand-outs in the last minute against `per_minute` (each None when not set), and
    the steps waiting."""

    running: int = 0
    queued: int = 0
    max_running: int | None = None
    last_minute: int | None = None
    per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The health screen: `ops_status()`.

    `alerts` is what `agent-ops status` exits non-zero on: {stalled_kinds, open_breakers, heartbeat_late,
    queued_age_seconds, heartbeat_age_seconds} (the last two are the thresholds of policy `alerts`). An exhausted
    budget is shown (`spend_today`) but is not a problem: the budgets hold spending steps on purpose.
    """

    system_enabled: bool
    pending_proposals: int
    proposals_today: dict[str, int]
    active_missions: dict[str, int]
    finished_missions_24h: dict[str, int]
    queue: dict[str, int]
    running: dict[str, int]
    reactions_queued: int
    circuit_breakers: dict[str, Any]
    last_heartbeat: dict[str, Any] | None
    recent_missions: list[dict[str, Any]]
    workers: list[Worker] = field(default_factory=list)
    stalled: list[dict[str, Any]] = field(default_factory=list)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeat_age_seconds: float | None = None
    alerts: dict[str, Any] = field(default_factory=dict)
    # Today's spend per agent with the budgets (None from a database without spend tracking).
    spend_today: SpendToday | None = None
    # The kinds with fleet-wide limits, by kind.
    limits: dict[str, KindLimit] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """What needs a person now, one line each: stalled kinds and a late heartbeat (empty: healthy)."""
        found = [
            f"{s['kind']} stalled ({str(s['reason']).replace('_', ' ')}): {s['queued']} ready step(s), "
            f"the oldest waiting {_age(s.get('age_seconds'))}"
            for s in self.stalled
        ]
        if self.alerts.get("heartbeat_late"):
            limit = self.alerts.get("heartbeat_age_seconds")
            found.append(
                "no heartbeat has run"
                if self.heartbeat_age_seconds is None
                else f"heartbeat late: the last ran {_age(self.heartbeat_age_seconds)} ago (limit {_age(limit)})"
            )
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        return cls(
            system_enabled=bool(data["system_enabled"]),
            pending_proposals=int(data["proposals"]["pending"]),
            proposals_today=dict(data["proposals"]["today"]),
            active_missions=dict(data["missions"]["active"]),
            finished_missions_24h=dict(data["missions"]["finished_24h"]),
            queue=dict(data["queue"]),
            running=dict(data["running"]),
            reactions_queued=int(data["reactions_queued"]),
            circuit_breakers=dict(data["circuit_breakers"]),
            last_heartbeat=data.get("last_heartbeat"),
            recent_missions=list(data.get("recent_missions") or []),
            workers=[Worker.from_json(w) for w in data.get("workers") or []],
            stalled=list(data.get("stalled") or []),
            breakers=dict(data.get("breakers") or {}),
            heartbeat_age_seconds=data.get("heartbeat_age_seconds"),
            alerts=dict(data.get("alerts") or {}),
            spend_today=SpendToday.from_json(data["spend_today"]) if data.get("spend_today") else None,
            limits={k: KindLimit.from_json(v) for k, v in (data.get("limits") or {}).items()},
        )


def _age(seconds: Any) -> str:
    """A duration for people: 45 s, 12 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


@dataclass(frozen=True, slots=True)
class ClaimedNotification(_FromJson):
    """One outbox row handed to a deliverer (`ops_claim_notifications`): where it goes and what it says.

    `url_env` names the deliverer's environment variable that holds the sink's URL; the database never
    sees the URL.
    """

    id: int
    sink: str
    attempt: int
    format: NotificationFormat
    url_env: str
    idempotency_key: str
    event: dict[str, Any]
    matched: str = "type"
    lease_expires_at: datetime | None = None
    lease_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class NotificationReport(_FromJson):
    """What `ops_report_notification` made of one attempt: sent, pending again (from next_attempt_at) or dead."""

    id: int
    sink: str
    attempt: int
    status: NotificationStatus
    next_attempt_at: datetime | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Notification(_FromJson):
    """One row of the notification outbox as `ops_list_notifications` shows it (newest first)."""

    id: int
    sink: str
    status: NotificationStatus
    attempts: int
    event_id: int
    event_type: str
    created_at: datetime
    matched: str = "type"
    event_title: str | None = None
    idempotency_key: str = ""
    next_attempt_at: datetime | None = None
    lease_expires_at: datetime | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    dead_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SignOff(_FromJson):
    """`ops_worker_sign_off`: whether the worker was known (signing off twice is harmless)."""

    worker_id: str
    signed_off: bool


# The fields of a trigger rule document (ops_set_trigger_rule); the rest of a rule is the heartbeat's bookkeeping.
TRIGGER_RULE_FIELDS = (
    "name",
    "trigger_event",
    "conditions",
    "action_config",
    "cooldown_minutes",
    "skip_probability",
    "jitter_minutes",
    "enabled",
)


@dataclass(frozen=True, slots=True)
class TriggerRule(_FromJson):
    """A trigger rule as `ops_list_trigger_rules` / `ops_get_trigger_rule` show it: its definition, the
    heartbeat's bookkeeping (`next_due_at` is None while disabled; `due`: the next heartbeat checks it) and its
    latest firings, newest first (`recent_fires`: event_id, fired_at, proposal_id, status, mission_id, reason)."""

    id: int
    name: str
    trigger_event: TriggerChecker
    conditions: dict[str, Any]
    action_config: dict[str, Any]
    cooldown_minutes: int
    skip_probability: float
    jitter_minutes: int
    enabled: bool
    fire_count: int = 0
    due: bool = False
    last_fired_at: datetime | None = None
    last_evaluated_at: datetime | None = None
    next_due_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    recent_fires: list[dict[str, Any]] = field(default_factory=list)

    def definition(self) -> dict[str, Any]:
        """The document `Ops.set_trigger_rule` takes, as this rule stands."""
        return {name: getattr(self, name) for name in TRIGGER_RULE_FIELDS}


@dataclass(frozen=True, slots=True)
class TriggerRuleChange:
    """What a write did: `action` is created, updated, enabled, disabled, deleted or unchanged (nothing written,
    no event); `changed` lists the fields that changed; `rule` is the rule now (for a deletion, as it was)."""

    action: str
    changed: list[str]
    rule: TriggerRule

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TriggerRuleChange:
        rule = TriggerRule.from_json(data["rule"])
        return cls(action=data["action"], changed=list(data.get("changed") or []), rule=rule)


@dataclass(frozen=True, slots=True)
class TriggerPreview(_FromJson):
    """The dry run `ops_preview_trigger_rule`: what the checker says now (`matches`, `checker`, or the `error`
    the heartbeat would meet), the proposal it would send, whether that window or event already made one
    (`duplicate_of`), the proposal service's refusal (`invalid`) or its decision now (`outcome`: status and
    reason), and whether the next heartbeat would propose (`would_propose`; a schedule may still skip)."""

    name: str
    trigger_event: TriggerChecker
    saved: bool
    enabled: bool
    due: bool
    matches: bool
    would_propose: bool
    next_due_at: datetime | None = None
    checker: str | None = None
    error: str | None = None
    dedupe_key: str | None = None
    duplicate_of: int | None = None
    skip_probability: float = 0.0
    proposal: dict[str, Any] | None = None
    invalid: str | None = None
    outcome: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """One report for `Ops.report` / `Ops.report_and_claim`: a success (`output`) or, with `error`, a failure."""

    step_id: int
    attempt: int
    output: Any = None
    error: str | None = None
    retryable: bool = True
    usage: Usage | Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {"step_id": self.step_id, "attempt": self.attempt}
        if self.error is None:
            report["output"] = {} if self.output is None else self.output
        else:
            report["error"] = self.error
            report["retryable"] = self.retryable
        if self.usage is not None:
            report["usage"] = self.usage.to_json() if isinstance(self.usage, Usage) else dict(self.usage)
        return report
