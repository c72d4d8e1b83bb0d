"""The fleet-wide limits per kind (max_running, per_minute) and the spend budgets under real concurrency:
threads each on its own service_role connection, released together (tests/kit/limits.py). The chaos
suite's R7 runs the same races at large sizes (200 claimers, a 75 s per_minute window that slides)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from tests.kit.contract import claim, events, service
from tests.kit.database import scalar
from tests.kit.limits import (
    SPENDER,
    SPENDING,
    VIAS,
    RateRace,
    RunningRace,
    budget_race,
    max_overlap,
    max_per_window,
    prepare,
    queue_steps,
    rate_race,
    report_and_claim,
    running_race,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_max_overlap_counts_half_open_intervals() -> None:
    assert max_overlap([]) == 0
    # One ending when the next starts never overlaps it.
    assert max_overlap([(at(0), at(1)), (at(1), at(2)), (at(2), at(3))]) == 1
    assert max_overlap([(at(0), at(10)), (at(1), at(2)), (at(1.5), at(3)), (at(2), at(4))]) == 3


def test_max_per_window_counts_half_open_windows() -> None:
    assert max_per_window([]) == 0
    # 60 s apart are in different windows; a microsecond less is the same window.
    assert max_per_window([at(0), at(60)]) == 1
    assert max_per_window([at(0), at(59.999999)]) == 2
    assert max_per_window([at(s) for s in (0, 10, 20, 65, 70, 71)]) == 4


def test_the_checks_catch_a_broken_limit() -> None:
    """The races' verdicts are not vacuous: a fourth running step, a race that never reached the limit, a 61st
    hand-out in a window, or a hand-out too few is reported."""
    fine = RunningRace(
        claimers=2, max_running=3, steps=5, seconds=1.0, handed_out=5, monitor_samples=10, monitor_max=3,
        claimer_max=3, overlap_max=3, left={"succeeded": 5}, attempts=1, handout_seconds=1.0,
    )  # fmt: skip
    assert fine.problems() == []
    assert "exceeded" in replace(fine, overlap_max=4).problems()[0]
    assert "exceeded" in replace(fine, claimer_max=4).problems()[0]
    assert "no race happened" in replace(fine, monitor_max=2, claimer_max=2, overlap_max=2).problems()[0]

    handouts = [at(i / 10) for i in range(60)]
    rate = RateRace(claimers=2, per_minute=60, queued=100, seconds=3.0, handouts=handouts, stored=handouts, log=60)
    assert rate.problems() == []
    over = [*handouts, at(59.9)]
    assert "61 hand-outs in one 60 s window" in replace(rate, handouts=over, stored=over).problems()[0]
    assert "expected 60" in replace(rate, handouts=handouts[1:], stored=handouts[1:]).problems()[0]


@pytest.mark.parametrize("via", VIAS)
def test_30_claimers_never_run_more_than_max_running_3(db_url: str, via: str) -> None:
    """30 claimers drain 60 steps of a kind with max_running = 3 (batches of 1-3, each step held 0-10 ms),
    claiming and reporting one call each or (batch) the reports carried by the next claim: the monitor's
    samples, each claimer's count right after its claim, and the steps' own intervals never show a fourth;
    all three see 3, and every step ran once."""
    race = running_race(db_url, claimers=30, steps=60, max_running=3, via=via)
    assert race.problems() == [], race.figures()
    assert (race.monitor_max, race.claimer_max, race.overlap_max) == (3, 3, 3)
    assert race.monitor_samples > 0
    assert race.handed_out == 60


def test_16_claimers_get_exactly_per_minute_60_in_the_first_window(db_url: str) -> None:
    """16 claimers for 2 s against per_minute = 60 with 100 steps queued: exactly 60 handed out, all in the
    first 60 s window, each stamped (reserved_at) with the claim time the sliding log holds."""
    race = rate_race(db_url, claimers=16, seconds=2.0, queued=100, per_minute=60)
    assert race.problems() == [], race.figures()
    assert len(race.handouts) == 60
    assert race.first_window == race.window_max == 60
    assert race.log == 60


@pytest.mark.parametrize(("scope", "via"), [("agent", "single"), ("global", "single"), ("agent", "batch")])
def test_16_reporters_overshoot_a_budget_only_by_the_steps_running_at_the_crossing(
    db_url: str, scope: str, via: str
) -> None:
    """16 claimer/reporters complete llm steps at 0.10 USD each against a daily budget of 1.00 USD (the
    spender's own, or the global one), one call each or (batch) the report carried by the next claim: one
    budget:exhausted event; spend at most 1.00 + 0.10 x the steps running at the crossing (the event's
    `running`); no step claimed after it; the rest stay queued."""
    # Batch: one step per call (see the next test for a call with more).
    race = budget_race(
        db_url, reporters=16, steps=60, limit_usd="1.00", cost_usd="0.10", scope=scope, via=via,
        max_steps=2 if via == "single" else 1,
    )  # fmt: skip
    assert race.problems() == [], race.figures()
    assert len(race.events) == 1
    assert race.events[0]["agent_id"] == ("spender" if scope == "agent" else "system")
    assert race.spend <= Decimal("1.00") + Decimal("0.10") * race.running_at_crossing
    assert race.left["queued"] == 60 - race.claimed > 0
    assert "failed" not in race.left


def test_a_batch_report_that_crosses_a_budget_counts_its_later_reports_as_running(db_url: str) -> None:
    """Without concurrency: 0.90 USD spent of 1.00, then one ops_report_steps call reports two steps at 0.10.
    The first crosses the budget; the second was running when it did and adds 0.10 after it, so the crossing
    event must count it in `running` (spend 1.10 <= 1.00 + 0.10 x running)."""
    prepare(db_url, {SPENDING: {}}, budgets={"per_agent": {SPENDER: {"daily_usd": 1.0}}})
    queue_steps(db_url, SPENDING, 12, agent_id=SPENDER)
    usage = {"cost_usd": 0.1, "model": "race-model"}
    with service(db_url) as api:
        for _ in range(9):
            report_and_claim(api, "single", "w", [SPENDING], 0, claim(api, "w", [SPENDING]), usage)
        both = claim(api, "w", [SPENDING], max_steps=2)
        assert len(both) == 2
        report_and_claim(api, "batch", "w", [SPENDING], 0, both, usage)
    with psycopg.connect(db_url, autocommit=True) as owner:
        spend = scalar(owner, "select cost_usd from public.ops_spend_daily where agent_id = %s", [SPENDER])
        (running,) = [e["payload"]["running"] for e in events(owner, "budget:exhausted")]
    assert spend == Decimal("1.10")
    assert spend <= Decimal("1.00") + Decimal("0.10") * running
