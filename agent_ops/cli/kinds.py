"""`agent-ops kinds list | enable KIND | disable KIND`: per-kind switches, and re-closing a circuit breaker."""

from __future__ import annotations

import argparse
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_json
from agent_ops.cli.output import print_table
from agent_ops.cli.policy import save


def _list(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        status = ops.status()
    rows = [
        {"kind": kind, "state": "disabled", "reason": flag.get("reason"), "queued": status.queue.get(kind, 0)}
        for kind, flag in sorted(status.circuit_breakers.items())
    ]
    rows += [
        {"kind": kind, "state": "enabled", "reason": None, "queued": n}
        for kind, n in sorted(status.queue.items())
        if kind not in status.circuit_breakers
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["kind", "state", "queued", "reason"])
    return 0


def _switch(args: argparse.Namespace, *, enabled: bool) -> int:
    value: dict[str, Any] = {"enabled": enabled}
    if not enabled:
        value["reason"] = args.reason
    return save(args, f"worker:{args.kind}", value, lambda _: f"{args.kind} {'enabled' if enabled else 'disabled'}")


def register(commands: Any) -> None:
    common = connection_options()
    kinds = commands.add_parser(
        "kinds",
        help="per-kind switches: list disabled kinds, re-enable one after its circuit breaker opened",
        description="Workers never claim a disabled kind. The circuit breaker disables a kind after repeated "
        "failures; `kinds enable KIND` puts it back to work.",
    )
    actions = kinds.add_subparsers(dest="kinds_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="disabled kinds and queue depth")
    listing.set_defaults(handler=_list)
    enable = actions.add_parser("enable", parents=[common], help="let workers claim KIND again")
    enable.add_argument("kind")
    enable.add_argument("--by", help="who (default: your user name)")
    enable.set_defaults(handler=lambda args: _switch(args, enabled=True))
    disable = actions.add_parser("disable", parents=[common], help="stop every worker from claiming KIND")
    disable.add_argument("kind")
    disable.add_argument("--reason", default="disabled by hand")
    disable.add_argument("--by", help="who (default: your user name)")
    disable.set_defaults(handler=lambda args: _switch(args, enabled=False))
