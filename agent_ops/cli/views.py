"""`agent-ops status | workers | spend | proposals | missions | steps | events`: what the loop is doing.

`status` exits EXIT_ATTENTION (5) while something needs a person: a stalled queue (alerts.stalled_kinds) or a
late heartbeat (alerts.heartbeat_late; policy `alerts` sets both thresholds), so a plain cron job or uptime
check can alert on its exit code. It prints what it found either way, including the fleet-wide kind limits and
today's spend against the budgets; an exhausted budget is shown, not alerted on (it holds spending on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_fields, print_json, print_json_line, when
from agent_ops.cli.output import note, print_table
from agent_ops.models import (
    ALL_AGENTS,
    MISSION_STATUSES,
    PROPOSAL_STATUSES,
    STEP_STATUSES,
    Event,
    KindLimit,
    Mission,
    SpendRow,
    Status,
    Step,
    Worker,
    parse_time,
)

# `agent-ops status`: the loop answered, but something needs a person (a stalled queue, a late heartbeat).
EXIT_ATTENTION = 5


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "-"
    seconds = max(0.0, (datetime.now(UTC) - value).total_seconds())
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _worker_line(worker: Worker) -> str:
    kinds = ", ".join(worker.kinds) or "all kinds"
    steps = " ".join(f"#{r['step_id']} {r['kind']}" for r in worker.running[:3])
    runs = f"{len(worker.running)} running" + (f" ({steps}{' …' if len(worker.running) > 3 else ''})" if steps else "")
    stopping = ", stopping" if worker.stopping else ""
    return f"{worker.worker_id} ({kinds}): {runs}, seen {_ago(worker.last_seen_at)}{stopping}"


def _breaker_line(kind: str, breaker: dict[str, Any]) -> str:
    count = breaker.get("consecutive_failures", 0)
    failures = f"{count} failure{'' if count == 1 else 's'}"
    if breaker.get("state") == "closed":
        return f"{kind} closed ({failures} in a row)"
    probe = parse_time(breaker.get("reopen_at"))
    return f"{kind} {str(breaker.get('state')).replace('_', '-')} ({failures}, probe at {when(probe)} UTC)"


def _heartbeat_line(status: Status) -> str:
    beat = status.last_heartbeat
    if not beat:
        return "never"
    age = status.heartbeat_age_seconds
    late = " LATE" if status.alerts.get("heartbeat_late") else ""
    return f"{beat['status']} at {when(parse_time(beat['started_at']))} UTC in {beat['duration_ms']} ms" + (
        f" ({age:.0f} s ago{late})" if age is not None else ""
    )


def usd(value: float | None) -> str | None:
    """An amount of USD for people: up to 6 decimals, trailing zeros dropped (0.0042, 12.5, 0)."""
    if value is None:
        return None
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _of(used: Any, limit: Any) -> str:
    """`used/limit`, or just `used` without a limit."""
    return f"{used}/{limit}" if limit is not None else str(used)


def limit_row(kind: str, limit: KindLimit) -> dict[str, Any]:
    """One kind's fleet-wide limits: running against max_running, the last minute's hand-outs against per_minute
    (None when per_minute is not set), and the steps waiting."""
    return {
        "kind": kind,
        "running": _of(limit.running, limit.max_running),
        "last minute": _of(limit.last_minute or 0, limit.per_minute) if limit.per_minute is not None else None,
        "queued": limit.queued,
    }


LIMIT_COLUMNS = ["kind", "running", "last minute", "queued"]


def spend_row(row: SpendRow) -> dict[str, Any]:
    """One agent's spend for a day against its limits; EXHAUSTED once a limit is reached."""
    return {
        "day": row.day,
        "agent": "all agents" if row.agent_id == ALL_AGENTS else row.agent_id,
        "usd": _of(usd(row.cost_usd), usd(row.limit_usd)),
        "tokens": _of(row.tokens, row.limit_tokens),
        "in": row.tokens_in,
        "out": row.tokens_out,
        "steps": row.steps,
        "budget": "EXHAUSTED" if row.exhausted else None,
    }


SPEND_COLUMNS = ["agent", "usd", "tokens", "in", "out", "steps", "budget"]


def _budgets_line(budgets: dict[str, Any] | None) -> str:
    return "budgets " + (json.dumps(budgets, sort_keys=True) if budgets else "none (policy budgets is not set)")


def _status(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        status = ops.status()
    problems = status.problems
    if args.json:
        print_json(status)
    else:
        print_fields(
            [
                ("system", "enabled" if status.system_enabled else "DISABLED (kill switch)"),
                ("proposals pending", status.pending_proposals),
                ("proposals today", _counts(status.proposals_today)),
                ("missions active", _counts(status.active_missions)),
                ("missions done 24h", _counts(status.finished_missions_24h)),
                ("queue by kind", _counts(status.queue)),
                ("running by worker", _counts(status.running)),
                ("workers live", "; ".join(_worker_line(w) for w in status.workers) or "none"),
                (
                    "stalled kinds",
                    "; ".join(
                        f"{s['kind']} ({str(s['reason']).replace('_', ' ')}, since {when(parse_time(s['since']))} UTC)"
                        for s in status.stalled
                    )
                    or "none",
                ),
                ("breakers", "; ".join(_breaker_line(k, b) for k, b in sorted(status.breakers.items())) or "none"),
                ("disabled kinds", ", ".join(sorted(status.circuit_breakers)) or "none"),
                ("reactions queued", status.reactions_queued),
                ("last heartbeat", _heartbeat_line(status)),
            ]
        )
        sys.stdout.write("\nkind limits (worker_policy.kinds)\n")
        print_table([limit_row(k, v) for k, v in sorted(status.limits.items())], LIMIT_COLUMNS)
        today = status.spend_today
        if today is not None:
            sys.stdout.write(f"\nspend today ({today.day} UTC; {_budgets_line(today.budgets)})\n")
            print_table([spend_row(a) for a in today.agents], SPEND_COLUMNS)
        sys.stdout.write("\nrecent missions\n")
        print_table(status.recent_missions, ["id", "agent_id", "status", "title"])
    for problem in problems:
        note(f"agent-ops status: needs attention: {problem}")
    return EXIT_ATTENTION if problems else 0


def _workers(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        workers = ops.workers()
    if not args.all:
        workers = [w for w in workers if w.live]
    if args.json:
        print_json(workers)
        return 0
    rows = [
        {
            "worker": w.worker_id,
            "live": "yes" if w.live else "no",
            "kinds": ",".join(w.kinds) or "(all)",
            "running": ", ".join(f"#{r['step_id']} {r['kind']}" for r in w.running) or None,
            "slots": f"{len(w.running)}/{w.concurrency}" if w.concurrency else len(w.running),
            "last seen": _ago(w.last_seen_at) + (" (stopping)" if w.stopping else ""),
            "host": w.host,
            "version": w.version,
        }
        for w in workers
    ]
    print_table(rows, ["worker", "live", "kinds", "running", "slots", "last seen", "host", "version"])
    return 0


def _spend(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        spend = ops.spend(days=args.days)
    if args.json:
        print_json(spend)
        return 0
    sys.stdout.write(_budgets_line(spend.budgets) + "\n")
    print_table([spend_row(d) for d in spend.days], ["day", *SPEND_COLUMNS])
    return 0


def _proposals(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        proposals = ops.proposals(status=args.status, agent_id=args.agent, limit=args.limit)
    if args.json:
        print_json(proposals)
        return 0
    rows = [
        {
            "id": p.id,
            "agent": p.agent_id,
            "status": p.status,
            "source": p.source,
            "kinds": ",".join(s.get("kind", "?") for s in p.steps),
            "title": p.title,
            "mission": p.mission_id,
            "reason": p.reason,
            "created": when(p.created_at),
        }
        for p in proposals
    ]
    print_table(rows, ["id", "agent", "status", "source", "kinds", "title", "mission", "reason", "created"])
    return 0


def _progress(mission: Mission) -> str:
    done = sum(1 for s in mission.steps if s.status == "succeeded")
    return f"{done}/{len(mission.steps)}"


def _step_row(step: Step) -> dict[str, Any]:
    seconds = step.duration_seconds
    return {
        "id": step.id,
        "mission": step.mission_id,
        "pos": step.position,
        "kind": step.kind,
        "status": step.status,
        "attempt": f"{step.attempt}/{step.max_attempts}",
        "worker": step.reserved_by,
        "took": None if seconds is None else f"{seconds:.2f}s",
        "error": step.last_error,
    }


def _missions(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        if args.mission_id is not None:
            mission = ops.mission(args.mission_id)
            if args.json:
                print_json(mission)
                return 0
            print_fields(
                [
                    ("mission", mission.id),
                    ("title", mission.title),
                    ("agent", mission.agent_id),
                    ("status", mission.status),
                    ("reason", mission.reason),
                    ("proposal", mission.proposal_id),
                    ("created", when(mission.created_at)),
                    ("finished", when(mission.finalized_at)),
                ]
            )
            sys.stdout.write("\n")
            print_table(
                [_step_row(s) for s in mission.steps], ["pos", "kind", "status", "attempt", "worker", "took", "error"]
            )
            return 0
        missions = ops.missions(status=args.status, agent_id=args.agent, limit=args.limit)
    if args.json:
        print_json(missions)
        return 0
    rows = [
        {
            "id": m.id,
            "agent": m.agent_id,
            "status": m.status,
            "steps": _progress(m),
            "title": m.title,
            "created": when(m.created_at),
            "finished": when(m.finalized_at),
            "reason": m.reason,
        }
        for m in missions
    ]
    print_table(rows, ["id", "agent", "status", "steps", "title", "created", "finished", "reason"])
    return 0


def _steps(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        steps = ops.steps(status=args.status, kind=args.kind, mission_id=args.mission, limit=args.limit)
    if args.json:
        print_json(steps)
        return 0
    print_table(
        [_step_row(s) for s in steps], ["id", "mission", "pos", "kind", "status", "attempt", "worker", "took", "error"]
    )
    return 0


def _event_row(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": when(event.created_at),
        "type": event.type,
        "agent": event.agent_id,
        "title": event.title,
    }


def _events(args: argparse.Namespace) -> int:
    filters = {"type": args.type, "tag": args.tag, "agent_id": args.agent, "mission_id": args.mission}
    columns = ["id", "time", "type", "agent", "title"]
    with open_ops(args) as ops:
        events = list(reversed(ops.events(**filters, limit=args.limit)))
        if args.json and not args.follow:
            print_json(events)
            return 0
        _print_events(args, events, columns, header=True)
        if not args.follow:
            return 0
        last = events[-1].id if events else 0
        try:
            while True:
                time.sleep(args.interval)
                fresh = ops.events(**filters, after_id=last, limit=1000)
                if fresh:
                    _print_events(args, fresh, columns, header=False)
                    last = fresh[-1].id
        except KeyboardInterrupt:
            return 0


def _print_events(args: argparse.Namespace, events: list[Event], columns: list[str], *, header: bool) -> None:
    if args.json:
        for event in events:
            print_json_line(event)  # JSON lines while following, so scripts read the stream as it comes
    elif header:
        print_table([_event_row(e) for e in events], columns)
    else:
        for event in events:
            row = _event_row(event)
            sys.stdout.write("  ".join("-" if row[c] is None else str(row[c]) for c in columns) + "\n")
    sys.stdout.flush()


def register(commands: Any) -> None:
    common = connection_options()
    status = commands.add_parser(
        "status",
        parents=[common],
        help="counts by status, queue, workers, stalls, breakers, kind limits, today's spend, last heartbeat; "
        "exit 5 when something needs a person",
        description="What the loop is doing, with the fleet-wide kind limits and today's spend per agent against "
        "the budgets. Exits 5 (and says why on stderr) while a queue is stalled or the heartbeat is late "
        "(thresholds: policy `alerts`), so a plain cron job or uptime check can alert; an exhausted budget does "
        "not change the exit code.",
    )
    status.set_defaults(handler=_status)

    workers = commands.add_parser(
        "workers", parents=[common], help="live workers: their kinds, the steps each runs, when each was last seen"
    )
    workers.add_argument(
        "--all", action="store_true", help="also workers no longer live that the heartbeat has not forgotten yet"
    )
    workers.set_defaults(handler=_workers)

    spend = commands.add_parser(
        "spend",
        parents=[common],
        help="usage and cost per UTC day and agent against the budgets",
        description="What the steps reported using (tokens, cost in USD) per UTC day and agent, newest day first, "
        "'all agents' first within a day, with each one's daily limits (policy budgets) and EXHAUSTED once a "
        "limit is reached: that agent's spending steps are held and its proposals refused until the day turns "
        "or the budget is raised.",
    )
    spend.add_argument(
        "--days", type=int, default=7, help="how many UTC days back, today included (1 to 366, default 7)"
    )
    spend.set_defaults(handler=_spend)

    proposals = commands.add_parser("proposals", parents=[common], help="list proposals, newest first")
    proposals.add_argument("--status", choices=PROPOSAL_STATUSES)
    proposals.add_argument("--agent")
    proposals.add_argument("--limit", type=int, default=50)
    proposals.set_defaults(handler=_proposals)

    missions = commands.add_parser("missions", parents=[common], help="list missions, or show one with its steps")
    missions.add_argument("mission_id", nargs="?", type=int, help="show this mission and its steps")
    missions.add_argument("--status", choices=MISSION_STATUSES)
    missions.add_argument("--agent")
    missions.add_argument("--limit", type=int, default=50)
    missions.set_defaults(handler=_missions)

    steps = commands.add_parser("steps", parents=[common], help="list steps, newest first")
    steps.add_argument("--status", choices=STEP_STATUSES)
    steps.add_argument("--kind")
    steps.add_argument("--mission", type=int)
    steps.add_argument("--limit", type=int, default=100)
    steps.set_defaults(handler=_steps)

    events = commands.add_parser("events", parents=[common], help="recent events; --follow to keep watching")
    events.add_argument("--type", help="e.g. mission:failed")
    events.add_argument("--tag", help="e.g. warning")
    events.add_argument("--agent")
    events.add_argument("--mission", type=int)
    events.add_argument("--limit", type=int, default=30)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    events.add_argument("--interval", type=float, default=1.0, help="seconds between polls when following")
    events.set_defaults(handler=_events)
