"""`agent-ops notify`: deliver the notifications that are due, once (for cron), or list the outbox."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_json, when
from agent_ops.cli.output import print_table
from agent_ops.models import NOTIFICATION_STATUSES
from agent_ops.notify import Deliverer


def _notify(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        if args.list:
            return _list(args, ops)
        with Deliverer(ops, max_items=args.max_items) as deliverer:
            run = deliverer.deliver_once()
    if args.json:
        print_json(run.to_json())
    else:
        sys.stdout.write(run.summary() + "\n")
        for record in run.deliveries:
            if record.get("outcome") != "sent":
                sys.stdout.write(
                    f"  #{record['id']} to {record['sink']} attempt {record['attempt']}: {record.get('outcome')}"
                    f"{' - ' + record['error'] if record.get('error') else ''}\n"
                )
    return 0 if run.ok else 1


def _list(args: argparse.Namespace, ops: Any) -> int:
    rows = ops.notifications(status=args.status, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [
            {
                "id": n.id,
                "sink": n.sink,
                "status": n.status,
                "attempts": n.attempts,
                "event": f"#{n.event_id} {n.event_type}",
                "next": when(n.next_attempt_at) if n.status == "pending" else "",
                "last": n.last_status or "",
                "error": (n.last_error or "")[:80],
                "created": when(n.created_at),
            }
            for n in rows
        ],
        ["id", "sink", "status", "attempts", "event", "next", "last", "error", "created"],
    )
    return 0


def register(commands: Any) -> None:
    common = connection_options()
    notify = commands.add_parser(
        "notify",
        parents=[common],
        help="deliver the notifications that are due to their webhook sinks, once; or --list the outbox",
        description="Claim due notifications (policy `notifications`), POST each to its sink (URL from the "
        "environment variable the sink names; never printed), report every attempt. For cron; "
        "`agent-ops heartbeat --every` and `agent-ops serve` deliver by themselves. Exit 1 when the database "
        "could not be reached; failed deliveries are retried by the database, not reflected in the exit code.",
    )
    notify.add_argument("--max-items", type=int, default=10, metavar="N", help="claim N at a time (default 10)")
    notify.add_argument("--list", action="store_true", help="show the outbox instead of delivering")
    notify.add_argument("--status", choices=NOTIFICATION_STATUSES, help="with --list: only this status")
    notify.add_argument("--limit", type=int, default=50, help="with --list: at most this many rows (default 50)")
    notify.set_defaults(handler=_notify)
