"""`agent-ops policy get [KEY] | set KEY VALUE`: read and change policy (validated by the SQL)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_json, who
from agent_ops.cli.errors import CliError
from agent_ops.cli.output import print_table
from agent_ops.models import Policy


def _get(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        if args.key:
            policy = ops.get_policy(args.key)
            if args.json:
                print_json(policy)
            else:
                sys.stdout.write(json.dumps(policy.value, indent=2) + "\n")
            return 0
        policies = ops.policies()  # every key the database holds, in one call
    if args.json:
        print_json(policies)
        return 0
    print_table(
        [{"key": p.key, "value": p.value, "updated_by": p.updated_by} for p in policies], ["key", "value", "updated_by"]
    )
    return 0


def _value(text: str) -> Any:
    raw = Path(text[1:]).read_text() if text.startswith("@") else sys.stdin.read() if text == "-" else text
    try:
        return json.loads(raw)
    except ValueError as error:
        raise CliError(f"the value is not valid JSON ({error})", exit_code=2) from None


def save(args: argparse.Namespace, key: str, value: dict[str, Any], said: Callable[[Policy], str]) -> int:
    """Set one policy key as `who(args)`; print the saved policy as JSON with --json, else `said(saved)`."""
    with open_ops(args) as ops:
        saved = ops.set_policy(key, value, who(args))
    if args.json:
        print_json(saved)
    else:
        sys.stdout.write(said(saved) + "\n")
    return 0


def _set(args: argparse.Namespace) -> int:
    value = _value(args.value)
    if not isinstance(value, dict):
        raise CliError("a policy value is a JSON object", exit_code=2)
    return save(args, args.key, value, lambda saved: f"{saved.key} = {json.dumps(saved.value)}")


def register(commands: Any) -> None:
    common = connection_options()
    policy = commands.add_parser("policy", help="read or change policy", description="Policy keys: see README.")
    actions = policy.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    get = actions.add_parser("get", parents=[common], help="one key's value, or every key")
    get.add_argument("key", nargs="?", help="e.g. system, worker_policy, worker:post_tweet")
    get.set_defaults(handler=_get)
    put = actions.add_parser(
        "set",
        parents=[common],
        help="change a key (the database validates it)",
        epilog="""example: agent-ops policy set system '{"enabled": false, "reason": "maintenance"}'""",
    )
    put.add_argument("key")
    put.add_argument("value", help="JSON, @file.json, or - for stdin")
    put.add_argument("--by", help="who changes it (default: your user name)")
    put.set_defaults(handler=_set)
