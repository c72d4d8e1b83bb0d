"""Seeded races decided inside Postgres, every caller on its own service_role connection and all released
together by one barrier.

- `gate_race`: many proposals at once against a quota, for each counted gate (docs/architecture.md,
  invariant 4: exactly the quota is accepted).
- `trigger_race`: many heartbeats (or `ops_evaluate_triggers()` calls, which skip the heartbeat's
  single-flight lock and meet only the rules' row locks and dedupe keys) at once with due rules of every
  checker kind: each rule fires exactly once, one firing counted and one proposal (pitfall P11).

Both run at a small size in tests/test_contract_concurrency.py and at large sizes as the chaos suite's R4
and R5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.kit.contract import rpc, run_concurrently
from tests.kit.database import QUOTA_KEYS, rows, scalar, set_policies

QUOTA = 5


@dataclass(frozen=True)
class Gate:
    """A counted gate set to a quota, with the other counted gates removed so nothing else serializes the
    race, and the n-th of the racing proposals."""

    policy: Callable[[int], dict[str, Any]]
    drop_keys: tuple[str, ...]
    proposal: Callable[[int], dict[str, Any]]


GATES = {
    # One agent, so the per-agent daily limit counts every proposal.
    "daily_proposal_limit": Gate(
        lambda quota: {"daily_proposal_limit": {"limit": quota}},
        ("max_active_missions",),
        lambda n: {"agent_id": "racer", "title": f"race {n}", "steps": [{"kind": "crawl"}]},
    ),
    "step_kind_quota": Gate(
        lambda quota: {"step_kind_gates": {"write_content": {"daily_limit": quota}}},
        QUOTA_KEYS,
        lambda n: {"agent_id": f"racer-{n}", "title": f"race {n}", "steps": [{"kind": "write_content"}]},
    ),
    "max_active_missions": Gate(
        lambda quota: {"max_active_missions": {"limit": quota}},
        ("daily_proposal_limit",),
        lambda n: {"agent_id": f"racer-{n}", "title": f"race {n}", "steps": [{"kind": "crawl"}]},
    ),
}


@dataclass
class GateRace:
    gate: str
    quota: int
    results: list[dict[str, Any]]
    stored: dict[str, int]  # proposals in the table by status
    missions: int

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r["status"] == "accepted")

    def problems(self) -> list[str]:
        """How the gate failed to hold: other than exactly `quota` accepted, a rejection without its reason,
        a mission too many or too few."""
        found = []
        rejected = len(self.results) - self.quota
        statuses = Counter(r["status"] for r in self.results)
        if statuses != {"accepted": self.quota, "rejected": rejected}:
            found.append(f"{self.gate}: {dict(statuses)} against a quota of {self.quota}")
        if any(r["status"] == "rejected" and (not r["reason"] or r["mission_id"] is not None) for r in self.results):
            found.append(f"{self.gate}: a rejection without its reason, or with a mission")
        if any(r["status"] == "accepted" and r["mission_id"] is None for r in self.results):
            found.append(f"{self.gate}: an accepted proposal without a mission")
        if self.stored != {"accepted": self.quota, "rejected": rejected}:
            found.append(f"{self.gate}: proposals stored {self.stored}")
        if self.missions != self.quota:
            found.append(f"{self.gate}: {self.missions} missions against a quota of {self.quota}")
        return found


def gate_race(url: str, gate: str, proposals: int, quota: int = QUOTA) -> GateRace:
    """`proposals` proposals at once against `gate` set to `quota`, on a migrated database without proposals."""
    spec = GATES[gate]
    policy = {
        "auto_approve": {"enabled": True, "allowed_step_kinds": ["crawl", "write_content"]},
        "step_kind_gates": {},
        **spec.policy(quota),
    }
    set_policies(url, policy, drop_keys=spec.drop_keys)
    results = run_concurrently(
        url, proposals, lambda conn, n: rpc(conn, "ops_create_proposal", proposal=spec.proposal(n))
    )
    with psycopg.connect(url, autocommit=True) as conn:
        stored = dict(rows(conn, "select status, count(*) from public.ops_mission_proposals group by status"))
        missions = int(scalar(conn, "select count(*) from public.ops_missions"))
    return GateRace(gate, quota, results, stored, missions)


# `copies` of four due rules, one of each checker kind, and the events the event and threshold rules look for.
RULES = """
insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config, cooldown_minutes, enabled)
select r.name || '-' || g, r.trigger_event, r.conditions::jsonb,
       jsonb_build_object('agent_id', 'racer', 'title', r.name || ' ' || g || ' fired', 'steps',
                          '[{"kind": "analyze"}]'::jsonb), 60, true
  from generate_series(1, %(copies)s) g
 cross join (values
   ('every-hour', 'schedule', '{}'),
   ('on-failure', 'event', '{"event_type": "mission:failed"}'),
   ('viral', 'threshold', '{"event_type": "tweet:metrics", "field": "engagement_rate", "op": ">", "value": 0.05}'),
   ('silence', 'absence', '{"event_type": "never:happens", "lookback_minutes": 60}')
 ) as r(name, trigger_event, conditions);
insert into public.ops_agent_events (type, agent_id, tags, payload)
values ('mission:failed', 'racer', '{mission:failed,mission,failed}', '{}'),
       ('tweet:metrics', 'racer', '{tweet:metrics,tweet,metrics}', '{"engagement_rate": 0.2}');
"""

# Each enabled rule: its name, how often it fired, and how many proposals name it.
FIRINGS = """
select r.name, r.fire_count,
       (select count(*) from public.ops_mission_proposals p where (p.metadata ->> 'trigger_rule_id')::bigint = r.id)
  from public.ops_trigger_rules r where r.enabled order by r.name
"""


@dataclass
class TriggerRace:
    function: str
    rules: int
    results: list[dict[str, Any]]
    firings: list[tuple[str, int, int]]  # (rule, fire_count, proposals naming it)

    @property
    def fired_once(self) -> int:
        return sum(1 for _, fired, proposals in self.firings if (fired, proposals) == (1, 1))

    @property
    def busy_skips(self) -> int:
        return sum(1 for r in self.results if r.get("skipped"))

    def problems(self) -> list[str]:
        found = []
        if len(self.firings) != self.rules:
            found.append(f"{self.function}: {len(self.firings)} rules instead of {self.rules}")
        wrong = [(name, fired, proposals) for name, fired, proposals in self.firings if (fired, proposals) != (1, 1)]
        if wrong:
            found.append(f"{self.function}: rules not fired exactly once (name, fired, proposals): {wrong}")
        return found


def trigger_race(url: str, function: str, callers: int, copies: int) -> TriggerRace:
    """`callers` calls of `function` (ops_heartbeat or ops_evaluate_triggers) at once with `copies` of the four
    due rules, on a migrated database whose own rules are disabled; no quota in the way of their proposals."""
    set_policies(url, drop_keys=QUOTA_KEYS)
    with psycopg.connect(url, autocommit=True) as conn, psycopg.ClientCursor(conn) as cursor:
        cursor.execute(RULES, {"copies": copies})
    results = run_concurrently(url, callers, lambda conn, _: rpc(conn, function))
    with psycopg.connect(url, autocommit=True) as conn:
        firings = [(str(name), int(fired), int(proposals)) for name, fired, proposals in rows(conn, FIRINGS)]
    return TriggerRace(function, 4 * copies, results, firings)
