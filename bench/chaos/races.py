"""R4 and R5: races decided inside Postgres (the scenarios are tests/kit/races.py's).

R4 — gate race: 200 proposals sent at once (200 connections released by one barrier) against a quota of 5,
for each counted gate in turn: the per-agent daily proposal limit, a step kind's daily quota, and the cap on
active missions → exactly 5 accepted each time (docs/architecture.md, invariant 4).

R5 — 10 heartbeats at once with due triggers (schedule, event, threshold and absence rules) → each rule
fires exactly once: one firing counted, one proposal. Then the same with 10 concurrent
`ops_evaluate_triggers()` calls, which skip the heartbeat's single-flight lock and meet only the rules' row
locks and dedupe keys.
"""

from __future__ import annotations

from bench.chaos import verdict
from bench.common import progress
from tests.kit.database import migrate_and_seed, scratch_database
from tests.kit.races import GATES, QUOTA, gate_race, trigger_race


def gate_races(proposals: int = 200, quota: int = QUOTA) -> dict[str, object]:
    figures: dict[str, object] = {"proposals": proposals, "quota": quota}
    failures: list[str] = []
    for gate in GATES:
        progress(f"R4: {proposals} proposals at once against {gate} = {quota}")
        with scratch_database("chaos_r4") as url:
            migrate_and_seed(url)
            race = gate_race(url, gate, proposals, quota)
        figures[gate] = race.accepted
        failures += race.problems()
    verdict("R4", failures)
    return figures


def trigger_races(callers: int = 10, copies: int = 3) -> dict[str, object]:
    figures: dict[str, object] = {"callers": callers}
    failures: list[str] = []
    for function in ("ops_heartbeat", "ops_evaluate_triggers"):
        progress(f"R5: {callers} concurrent {function}() calls with {4 * copies} due rules")
        with scratch_database("chaos_r5") as url:
            migrate_and_seed(url)
            race = trigger_race(url, function, callers, copies)
        figures[function] = {"rules": len(race.firings), "fired_once": race.fired_once, "busy_skips": race.busy_skips}
        failures += race.problems()
    verdict("R5", failures)
    return figures
