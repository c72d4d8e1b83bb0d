"""`agent-ops status | proposals | missions | steps | events`: what the loop is doing."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_fields, print_json, print_json_line, when
from agent_ops.cli.output import print_table
from agent_ops.models import MISSION_STATUSES, PROPOSAL_STATUSES, STEP_STATUSES, Event, Mission, Step, parse_time


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _status(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        status = ops.status()
    if args.json:
        print_json(status)
        return 0
    beat = status.last_heartbeat
    print_fields(
        [
            ("system", "enabled" if status.system_enabled else "DISABLED (kill switch)"),
            ("proposals pending", status.pending_proposals),
            ("proposals today", _counts(status.proposals_today)),
            ("missions active", _counts(status.active_missions)),
            ("missions done 24h", _counts(status.finished_missions_24h)),
            ("queue by kind", _counts(status.queue)),
            ("running by worker", _counts(status.running)),
            ("reactions queued", status.reactions_queued),
            ("circuit breakers", ", ".join(status.circuit_breakers) or "none open"),
            (
                "last heartbeat",
                f"{beat['status']} at {when(parse_time(beat['started_at']))} UTC in {beat['duration_ms']} ms"
                if beat
                else "never",
            ),
        ]
    )
    sys.stdout.write("\nrecent missions\n")
    print_table(status.recent_missions, ["id", "agent_id", "status", "title"])
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
    status = commands.add_parser("status", parents=[common], help="counts by status, queue, last heartbeat")
    status.set_defaults(handler=_status)

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
