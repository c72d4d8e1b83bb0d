"""R7 — the fleet-wide limits and the spend budgets under concurrency (the scenarios are tests/kit/limits.py's).

- max_running: 200 claimers, each on its own connection, claim (batches of 1-3) a queue of steps of a kind
  limited to 3 running at once, hold each 0-10 ms and claim again until the queue is drained. A monitor
  samples the running count continuously, every claimer counts right after its claim returned, and the
  steps' [reserved_at, finished_at) intervals are swept afterwards: none may ever see a fourth. The full form
  runs it again (100 steps) with each claimer's reports carried by its next claim (ops_report_and_claim).
- per_minute: 32 claimers against a kind limited to 60 hand-outs a minute: every hand-out's reserved_at
  (the time the sliding log holds) is collected and no window [t, t + 60 s) may hold more than 60. The short
  form runs 3 s (exactly 60 handed out), the full one 75 s so the window slides (exactly 120).
- budgets: 16 claimer/reporters completing `llm` steps at 0.10 USD each against a daily budget of 1.00 USD,
  the agent's own (one call per report and claim, 1-2 steps a claim) and the global one (the report carried
  by the next claim, one step at a time): spend passes the limit by no more than the steps running at the
  crossing (the single budget:exhausted event's `running`), nothing is claimed after it, and the agent's
  unclaimed steps stay queued. The full form adds 48 reporters against 10.00 USD, each scope both ways.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager

from bench.chaos import verdict
from bench.common import progress
from tests.kit.database import migrate_and_seed, scratch_database
from tests.kit.limits import budget_race, rate_race, running_race

CLAIMERS = 200  # max_running race; the embedded server allows 300 connections (agent_ops/localpg.py)
MAX_RUNNING = 3
RATE_CLAIMERS = 32
PER_MINUTE = 60
BATCH_STEPS = 100


@contextmanager
def databases() -> Iterator[Iterator[str]]:
    """Fresh migrated databases, each a copy of one migrated template (a migration takes seconds, a copy
    a fraction of one)."""
    with scratch_database("chaos_r7_template") as template:
        migrate_and_seed(template)
        name = template.rsplit("/", 1)[1]

        def copies() -> Generator[str, None, None]:
            while True:
                with scratch_database("chaos_r7", template=name) as url:
                    yield url

        made = copies()
        try:
            yield made
        finally:
            made.close()  # drops the last copy


def run(steps: int, full: bool = False) -> dict[str, object]:
    """The three races: `steps` through max_running = 3 (the full form again with the reports carried by the
    claims); the per_minute race for 75 s (full) or 3 s; the budget races."""
    figures: dict[str, object] = {}
    failures: list[str] = []
    rate_seconds, rate_queued = (75.0, 300) if full else (3.0, 100)
    # Reports carried by claims keep a finished step running while its claimer waits for the kind's lock
    # behind every other claimer, so that form drains far slower: fewer steps.
    races = [("single", steps), ("batch", min(steps, BATCH_STEPS))] if full else [("single", steps)]
    # (scope, via, reporters, llm steps queued, limit in USD)
    budgets = [("agent", "single", 16, 60, "1.00"), ("global", "batch", 16, 60, "1.00")]
    if full:
        budgets += [("global", "single", 48, 300, "10.00"), ("agent", "batch", 48, 300, "10.00")]
    with databases() as fresh:
        held: list[dict[str, object]] = []
        for via, count in races:
            progress(f"R7: {CLAIMERS} claimers drain {count} steps of a kind with max_running = {MAX_RUNNING} ({via})")
            running = running_race(next(fresh), CLAIMERS, count, MAX_RUNNING, via=via)
            held.append(running.figures())
            failures += [f"max_running ({via}): {problem}" for problem in running.problems()]
        figures["max_running"] = held

        progress(f"R7: {RATE_CLAIMERS} claimers for {rate_seconds:.0f} s against per_minute = {PER_MINUTE}")
        rate = rate_race(next(fresh), RATE_CLAIMERS, rate_seconds, rate_queued, PER_MINUTE)
        figures["per_minute"] = rate.figures()
        failures += [f"per_minute: {problem}" for problem in rate.problems()]

        spent: list[dict[str, object]] = []
        for scope, via, reporters, queued, limit in budgets:
            progress(f"R7: {reporters} reporters, {queued} llm steps at 0.10 USD, a {scope} budget of {limit} ({via})")
            budget = budget_race(next(fresh), reporters, queued, limit_usd=limit, scope=scope, via=via, max_steps=2)
            spent.append(budget.figures())
            failures += [f"{scope} budget ({via}): {problem}" for problem in budget.problems()]
        figures["budgets"] = spent
    verdict("R7", failures)
    return figures
