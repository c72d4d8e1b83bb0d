"""Seeded races against the fleet-wide limits and the spend budgets, decided inside Postgres with real
concurrent connections (a thread each, on its own service_role connection, all released by one barrier).

- `running_race`: many claimers against `worker_policy.kinds.<kind>.max_running`; each claimer completes its
  steps after a short random sleep and claims again until the queue is drained. Three independent looks at
  "never more than max_running at once": a monitor connection sampling the running count continuously, every
  claimer counting right after its claim returned, and afterwards the steps' own [reserved_at, finished_at)
  intervals swept for the largest overlap.
- `rate_race`: many claimers against `per_minute` for a while; every hand-out's `reserved_at` (the claim JSON's,
  which is the time the sliding log holds) is collected and every window [t, t + 60 s) is counted.
- `budget_race`: claimer/reporters completing `llm` steps with a cost against a daily budget (one agent's, or
  the global one): spend may pass the limit only by the steps already running when it was crossed (the
  budget:exhausted event's `running`), exactly one such event, nothing claimed after the crossing, and the
  rest of the agent's steps still queued, not failed.

Each runs at a small size in tests/test_kind_limits.py and at larger sizes as the chaos suite's R7.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import psycopg

from tests.kit.contract import AsJson, claim, complete, rpc, run_concurrently
from tests.kit.database import QUOTA_KEYS, rows, scalar, set_policies

LIMITED = "limited"  # the kind of the max_running race
RATED = "rated"  # the kind of the per_minute race
SPENDING = "llm"  # a spending kind by default (budgets.kinds absent)
WINDOW = timedelta(seconds=60)

RUNNING = "select count(*) from public.ops_mission_steps where status = 'running' and kind = %s"
QUEUED = "select count(*) from public.ops_mission_steps where status = 'queued' and kind = %s"
INTERVALS = "select reserved_at, finished_at from public.ops_mission_steps where kind = %s and status = 'succeeded'"
STAMPS = "select reserved_at from public.ops_mission_steps where kind = %s and reserved_at is not null"
LOG = "select coalesce(max(cardinality(claimed_at)), 0) from public.ops_kind_claims where kind = %s"


def prepare(url: str, kinds: dict[str, dict[str, int]], budgets: dict[str, Any] | None = None) -> None:
    """Auto-approved steps of `kinds` with no volume quota in the way, worker_policy.kinds set to `kinds`
    (long leases: nothing is recovered behind the race's back), and `budgets` when given."""
    policy: dict[str, Any] = {
        "auto_approve": {"enabled": True, "allowed_step_kinds": sorted(kinds)},
        "step_kind_gates": {},
        "worker_policy": {"lease_seconds": 3600, "max_attempts": 3, "kinds": kinds},
    }
    if budgets is not None:
        policy["budgets"] = budgets
    set_policies(url, policy, drop_keys=QUOTA_KEYS)


def queue_steps(url: str, kind: str, count: int, agent_id: str = "limits") -> int:
    """`count` independent queued steps of `kind` for `agent_id`, 50 to a proposal; returns how many were queued."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select public.ops_create_proposal(jsonb_build_object('agent_id', %(agent)s::text,"
            " 'title', 'limits ' || p, 'steps', (select jsonb_agg(jsonb_build_object('kind', %(kind)s::text,"
            " 'payload', jsonb_build_object('n', p * 50 + s), 'depends_on', '[]'::jsonb))"
            " from generate_series(0, least(50, %(count)s - p * 50) - 1) s)))"
            " from generate_series(0, (%(count)s - 1) / 50) p",
            {"agent": agent_id, "kind": kind, "count": count},
        )
        queued = int(scalar(conn, QUEUED, [kind]))
        conn.execute(b"analyze public.ops_mission_steps")
    return queued


VIAS = ("single", "batch")


def report_and_claim(
    conn: psycopg.Connection,
    via: str,
    worker: str,
    kinds: list[str] | None,
    max_steps: int,
    done: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Report the `done` steps as succeeded (with `usage`), then claim up to `max_steps` (0: none). `via`
    "single": one ops_complete_step per step, then ops_claim_next_step; "batch": one ops_report_and_claim,
    the reports and the claim in one transaction. A report the database does not apply fails the race."""
    if via == "single":
        for item in done:
            rpc(conn, "ops_complete_step", step_id=item["id"], attempt=item["attempt"], output={}, usage=usage)
        return claim(conn, worker, kinds, max_steps=max_steps) if max_steps else []
    spent = {"usage": usage} if usage is not None else {}
    reports = [{"step_id": item["id"], "attempt": item["attempt"], "output": {}, **spent} for item in done]
    answer = rpc(conn, "ops_report_and_claim", worker_id=worker, reports=AsJson(reports), kinds=kinds,
                 max_steps=max_steps)  # fmt: skip
    refused = [report for report in answer["reports"] if "error" in report]
    assert not refused, f"reports not applied: {refused}"
    return cast(list[dict[str, Any]], answer["claimed"])


@contextmanager
def monitor(url: str, kind: str, pause: float = 0.001) -> Iterator[list[int]]:
    """Samples the kind's running count on a connection of its own, `pause` seconds apart (leaving the
    claimers some CPU), until the block ends; the list yielded ends up holding [samples, largest count seen]."""
    stop = threading.Event()
    seen = [0, 0]

    def sample() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                count = int(scalar(conn, RUNNING, [kind]))
                seen[0] += 1
                seen[1] = max(seen[1], count)
                time.sleep(pause)

    thread = threading.Thread(target=sample, name="limits-monitor", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=30)


def by_status(conn: psycopg.Connection, kind: str, agent_id: str | None = None) -> dict[str, int]:
    """The kind's steps (of one agent's missions, or all) by status."""
    found = rows(
        conn,
        "select s.status, count(*) from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id"
        " where s.kind = %s and (%s::text is null or m.agent_id = %s) group by 1",
        [kind, agent_id, agent_id],
    )
    return {str(status): int(count) for status, count in found}


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most half-open intervals [start, end) holding one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    # At equal times the -1 (an end) sorts first: an interval ending at t and one starting at t never overlap.
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def max_per_window(times: list[datetime], window: timedelta = WINDOW) -> int:
    """The most of `times` inside any half-open window [t, t + window)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def stamp(value: str) -> datetime:
    """A timestamptz as jsonb writes it (2026-12-03T11:41:06.123456+00:00)."""
    return datetime.fromisoformat(value)


@dataclass
class RunningRace:
    claimers: int
    max_running: int
    steps: int
    seconds: float  # the whole race: connections, warming up, the race, the last claimers' empty claims
    handed_out: int  # steps claimed (each exactly once: no retries in this race)
    monitor_samples: int
    monitor_max: int  # the largest running count the monitor sampled
    claimer_max: int  # the largest running count a claimer saw right after its claim returned
    # The most [reserved_at, finished_at) intervals at one instant. Sound (claims are ordered by the kind's
    # lock, and a step claimed after another's report committed starts after that report began), but low for
    # batch reports: finished_at is the report's transaction start, before its claim waited for the lock.
    overlap_max: int
    left: dict[str, int]  # the kind's steps by status at the end
    attempts: int  # the largest attempt of any step
    handout_seconds: float  # from the first step claimed to the last one finished
    via: str = "single"

    @property
    def max_seen(self) -> int:
        return max(self.monitor_max, self.claimer_max, self.overlap_max)

    def figures(self) -> dict[str, object]:
        return {
            "claimers": self.claimers,
            "via": self.via,
            "max_running": self.max_running,
            "steps": self.handed_out,
            "max_seen": {"monitor": self.monitor_max, "claimers": self.claimer_max, "overlap": self.overlap_max},
            "samples": self.monitor_samples,
            "seconds": round(self.seconds, 1),
            "handout_s": round(self.handout_seconds, 1),
            "steps_per_s": round(self.handed_out / self.handout_seconds) if self.handout_seconds else None,
        }

    def problems(self) -> list[str]:
        found = []
        if self.max_seen > self.max_running:
            found.append(
                f"max_running {self.max_running} exceeded: monitor saw {self.monitor_max}, claimers saw "
                f"{self.claimer_max}, intervals overlap {self.overlap_max}"
            )
        if self.monitor_samples == 0:
            found.append("the monitor took no sample")
        if self.max_seen < self.max_running:
            found.append(f"never {self.max_running} running at once (at most {self.max_seen}): no race happened")
        if self.handed_out != self.steps or self.left != {"succeeded": self.steps}:
            found.append(f"{self.handed_out} of {self.steps} steps handed out; left {self.left}")
        if self.attempts != 1:
            found.append(f"a step was claimed {self.attempts} times")
        return found


def running_race(
    url: str,
    claimers: int,
    steps: int,
    max_running: int = 3,
    hold: tuple[float, float] = (0.0, 0.01),
    idle: tuple[float, float] = (0.02, 0.1),
    via: str = "single",
    seed: int = 7,
) -> RunningRace:
    """`claimers` threads claim `steps` queued steps of a kind limited to `max_running` (batches of 1-3; every
    other claimer asks for that kind, the rest for every kind, which the limit holds for just the same), hold
    each a random `hold` seconds, complete it and claim again until none is queued; a claim that got nothing
    is retried after a random `idle` seconds. `via`: how steps are reported and claimed (`report_and_claim`).

    Before the race every claimer's connection makes one claim of a limited kind of its own (nothing queued):
    its backend plans the limited claim path then, in parallel, rather than each claimer's first claim in the
    race planning it while holding the one kind lock all the others wait for."""
    assert via in VIAS, via
    warm = {f"warm_{index}": {"max_running": 1} for index in range(claimers)}
    prepare(url, {LIMITED: {"max_running": max_running}, **warm})
    queued = queue_steps(url, LIMITED, steps)
    ready = threading.Barrier(claimers, action=lambda: prepare(url, {LIMITED: {"max_running": max_running}}))
    drained = threading.Event()

    def claimer(conn: psycopg.Connection, index: int) -> tuple[int, int]:
        rng = random.Random(seed * 100_003 + index)
        worker = f"claimer-{index}"
        asked = [LIMITED] if index % 2 else None  # every other claimer asks for every kind
        claim(conn, worker, [f"warm_{index}"])
        ready.wait(timeout=120)
        taken = most = 0
        done: list[dict[str, Any]] = []
        while not drained.is_set():
            got = report_and_claim(conn, via, worker, asked, 1 + index % 3, done)
            done = []
            if not got:
                if int(scalar(conn, QUEUED, [LIMITED])) == 0:
                    drained.set()
                time.sleep(rng.uniform(*idle))
                continue
            most = max(most, int(scalar(conn, RUNNING, [LIMITED])))
            for _ in got:
                time.sleep(rng.uniform(*hold))
            done = got
            taken += len(got)
        report_and_claim(conn, via, worker, asked, 0, done)
        return taken, most

    started = time.monotonic()
    with monitor(url, LIMITED) as seen:
        results = run_concurrently(url, claimers, claimer, timeout=600)
    seconds = time.monotonic() - started
    with psycopg.connect(url, autocommit=True) as conn:
        left = by_status(conn, LIMITED)
        intervals = [(start, end) for start, end in rows(conn, INTERVALS, [LIMITED])]
        attempts = int(scalar(conn, "select max(attempt) from public.ops_mission_steps where kind = %s", [LIMITED]))
    return RunningRace(
        claimers=claimers,
        max_running=max_running,
        steps=queued,
        seconds=seconds,
        handed_out=sum(taken for taken, _ in results),
        monitor_samples=seen[0],
        monitor_max=seen[1],
        claimer_max=max(most for _, most in results),
        overlap_max=max_overlap(intervals),
        left=left,
        attempts=attempts,
        handout_seconds=(max(end for _, end in intervals) - min(start for start, _ in intervals)).total_seconds()
        if intervals
        else 0.0,
        via=via,
    )


@dataclass
class RateRace:
    claimers: int
    per_minute: int
    queued: int
    seconds: float  # how long the claimers kept claiming
    handouts: list[datetime]  # every hand-out's reserved_at, as the claims returned it
    stored: list[datetime]  # the claimed steps' reserved_at as stored
    log: int  # entries in the kind's sliding log at the end

    @property
    def window_max(self) -> int:
        return max_per_window(self.handouts)

    @property
    def first_window(self) -> int:
        return sum(1 for t in self.handouts if t < min(self.handouts) + WINDOW) if self.handouts else 0

    @property
    def expected(self) -> int:
        """Hand-outs to expect: a full window at the start and another each time the first has slid past (the
        duration is chosen away from whole minutes)."""
        return min(self.queued, self.per_minute * (1 + int(self.seconds // 60)))

    def figures(self) -> dict[str, object]:
        span = (max(self.handouts) - min(self.handouts)).total_seconds() if self.handouts else 0.0
        return {
            "claimers": self.claimers,
            "per_minute": self.per_minute,
            "seconds": round(self.seconds, 1),
            "handed_out": len(self.handouts),
            "max_per_window": self.window_max,
            "first_window": self.first_window,
            "span_s": round(span, 1),
        }

    def problems(self) -> list[str]:
        found = []
        if self.window_max > self.per_minute:
            found.append(f"per_minute {self.per_minute} exceeded: {self.window_max} hand-outs in one 60 s window")
        if len(self.handouts) != self.expected:
            found.append(f"{len(self.handouts)} hand-outs in {self.seconds:.1f} s, expected {self.expected}")
        if Counter(self.handouts) != Counter(self.stored):
            found.append("the claims' reserved_at differ from the stored ones")
        if self.log > self.per_minute:
            found.append(f"the sliding log holds {self.log} entries")
        return found


def rate_race(url: str, claimers: int, seconds: float, queued: int, per_minute: int = 60, seed: int = 11) -> RateRace:
    """`claimers` threads claim (batches of 1-3) and complete steps of a kind limited to `per_minute` for
    `seconds`, from `queued` queued steps."""
    prepare(url, {RATED: {"per_minute": per_minute}})
    queued = queue_steps(url, RATED, queued)

    def claimer(conn: psycopg.Connection, index: int) -> tuple[list[datetime], float]:
        rng = random.Random(seed * 100_003 + index)
        started = time.monotonic()
        handouts: list[datetime] = []
        while time.monotonic() - started < seconds:
            got = claim(conn, f"rater-{index}", [RATED], max_steps=1 + index % 3)
            for item in got:
                handouts.append(stamp(item["reserved_at"]))
                complete(conn, item["id"], item["attempt"])
            if not got:
                time.sleep(rng.uniform(0.005, 0.03))
        return handouts, time.monotonic() - started

    results = run_concurrently(url, claimers, claimer, timeout=seconds + 120)
    with psycopg.connect(url, autocommit=True) as conn:
        stored = [at for (at,) in rows(conn, STAMPS, [RATED])]
        log = int(scalar(conn, LOG, [RATED]))
    return RateRace(
        claimers=claimers,
        per_minute=per_minute,
        queued=queued,
        seconds=min(took for _, took in results),
        handouts=[t for handouts, _ in results for t in handouts],
        stored=stored,
        log=log,
    )


@dataclass
class BudgetRace:
    scope: str  # "agent": the spender's own budget; "global": every agent's together
    reporters: int
    steps: int
    limit_usd: Decimal
    cost_usd: Decimal
    claimed: int  # steps the reporters claimed (and reported)
    spend: Decimal  # the budget's spend at the end (the agent's row, or '*')
    reports: int  # reports counted in that row
    events: list[dict[str, Any]]  # budget:exhausted events
    left: dict[str, int]  # the spender's llm steps by status at the end
    held_claim: int  # steps a claim of every kind got afterwards
    bystander: int | None = None  # agent scope: another agent's llm steps a claim still got
    via: str = "single"

    @property
    def running_at_crossing(self) -> int:
        return int(self.events[0]["payload"]["running"]) if len(self.events) == 1 else -1

    @property
    def overshoot(self) -> Decimal:
        return self.spend - self.limit_usd

    def figures(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "via": self.via,
            "reporters": self.reporters,
            "limit_usd": str(self.limit_usd),
            "spend_usd": str(self.spend),
            "overshoot_usd": str(self.overshoot),
            "running_at_crossing": self.running_at_crossing,
            "allowed_overshoot_usd": str(self.cost_usd * max(self.running_at_crossing, 0)),
            "claimed": self.claimed,
            "queued_left": self.left.get("queued", 0),
        }

    def problems(self) -> list[str]:
        found = []
        if len(self.events) != 1:
            return [f"{len(self.events)} budget:exhausted events, expected 1"]
        running = self.running_at_crossing
        if self.spend > self.limit_usd + self.cost_usd * running:
            found.append(f"spend {self.spend} > limit {self.limit_usd} + {self.cost_usd} x {running} running")
        at_crossing: Decimal = self.events[0]["cost_usd"]
        if at_crossing < self.limit_usd or at_crossing - self.cost_usd >= self.limit_usd:
            found.append(f"the event's cost_usd {at_crossing} is not the crossing of {self.limit_usd}")
        # Every claimed step was reported by the crossing or running at it: none was claimed afterwards.
        if self.claimed != at_crossing / self.cost_usd + running:
            found.append(
                f"{self.claimed} steps claimed, but {at_crossing / self.cost_usd} reported by the crossing"
                f" + {running} running at it: a step was claimed after the budget was exhausted"
            )
        if self.spend != self.cost_usd * self.claimed or self.reports != self.claimed:
            found.append(f"spend {self.spend} over {self.reports} reports for {self.claimed} claimed steps")
        if self.left != {"succeeded": self.claimed, "queued": self.steps - self.claimed}:
            found.append(f"the spender's steps at the end: {self.left} (the unclaimed ones must stay queued)")
        if self.held_claim:
            found.append(f"a claim after the exhaustion got {self.held_claim} of the held steps")
        if self.bystander is not None and self.bystander != 1:
            found.append(f"another agent's llm step was not claimable ({self.bystander}) under the spender's budget")
        return found


SPENDER = "spender"


def budget_race(
    url: str,
    reporters: int,
    steps: int,
    limit_usd: str = "1.00",
    cost_usd: str = "0.10",
    scope: str = "agent",
    hold: tuple[float, float] = (0.0, 0.01),
    via: str = "single",
    max_steps: int = 2,
    seed: int = 13,
) -> BudgetRace:
    """`reporters` threads claim the spender's `steps` queued llm steps, hold each a random `hold` seconds and
    complete it reporting `cost_usd`, until nothing is queued or the budget (`limit_usd`, the spender's own or
    the global one) is exhausted. `via`: how steps are reported and claimed (`report_and_claim`); the
    reporters claim 1 to `max_steps` steps at a time (by turns). With via "batch" a call reports several steps:
    when one crosses the budget, the call's later reports count as running at the crossing (they were)."""
    assert via in VIAS, via
    limit, cost = Decimal(limit_usd), Decimal(cost_usd)
    budget = {"per_agent": {SPENDER: {"daily_usd": float(limit)}}} if scope == "agent" else {"daily_usd": float(limit)}
    prepare(url, {SPENDING: {}}, budgets=budget)
    queued = queue_steps(url, SPENDING, steps, agent_id=SPENDER)
    who = SPENDER if scope == "agent" else "*"
    usage = {"tokens_in": 1000, "tokens_out": 200, "cost_usd": float(cost), "model": "race-model"}
    spent = (
        "select coalesce(max(cost_usd), 0) from public.ops_spend_daily"
        " where day = (now() at time zone 'UTC')::date and agent_id = %s"
    )

    def reporter(conn: psycopg.Connection, index: int) -> int:
        rng = random.Random(seed * 100_003 + index)
        taken = 0
        done: list[dict[str, Any]] = []
        while True:
            got = report_and_claim(conn, via, f"reporter-{index}", [SPENDING], 1 + index % max_steps, done, usage)
            done = []
            if not got:
                if int(scalar(conn, QUEUED, [SPENDING])) == 0 or Decimal(scalar(conn, spent, [who])) >= limit:
                    return taken
                time.sleep(rng.uniform(0.001, 0.01))
                continue
            for _ in got:
                time.sleep(rng.uniform(*hold))
            done = got
            taken += len(got)

    results = run_concurrently(url, reporters, reporter, timeout=300)
    with psycopg.connect(url, autocommit=True) as conn:
        spend, reports = rows(
            conn,
            "select coalesce(max(cost_usd), 0), coalesce(max(steps), 0) from public.ops_spend_daily"
            " where day = (now() at time zone 'UTC')::date and agent_id = %s",
            [who],
        )[0]
        found = [
            {"agent_id": agent, "payload": payload, "cost_usd": crossed_at}
            for agent, payload, crossed_at in rows(
                conn,
                "select agent_id, payload, (payload ->> 'cost_usd')::numeric from public.ops_agent_events"
                " where type = 'budget:exhausted' order by id",
            )
        ]
        left = by_status(conn, SPENDING, SPENDER)
        conn.execute(b"set role service_role")
        held_claim = len(claim(conn, "after-exhaustion", None, max_steps=100))
        bystander = None
        if scope == "agent":
            queue_steps(url, SPENDING, 1, agent_id="bystander")
            got = claim(conn, "bystander-worker", [SPENDING], max_steps=100)
            bystander = len(got) if all(item["agent_id"] == "bystander" for item in got) else -len(got)
    return BudgetRace(
        scope=scope,
        reporters=reporters,
        steps=queued,
        limit_usd=limit,
        cost_usd=cost,
        claimed=sum(results),
        spend=Decimal(spend),
        reports=int(reports),
        events=found,
        left=left,
        held_claim=held_claim,
        bystander=bystander,
        via=via,
    )
