"""`agent-ops triggers list | show NAME | set JSON|--file PATH | enable NAME | disable NAME | delete NAME |
preview NAME|--file PATH`: trigger rules through the API (validated by the SQL, each change an event)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_fields, print_json, when, who
from agent_ops.cli.errors import CliError
from agent_ops.cli.output import print_table
from agent_ops.models import TriggerPreview, TriggerRule, TriggerRuleChange, parse_time

EXIT_USAGE = 2
# What `show --json` and `list --json` print besides a rule's definition: the heartbeat's bookkeeping. `set`
# drops these, so that output can be edited and set again; any other key goes to the SQL, which names what it
# refuses.
BOOKKEEPING = frozenset(
    {"id", "fire_count", "due", "last_fired_at", "last_evaluated_at", "next_due_at", "created_at", "updated_at"}
    | {"recent_fires"}
)


def _next(rule: TriggerRule) -> str:
    if not rule.enabled:
        return "-"
    return "due now" if rule.due else when(rule.next_due_at)


def _list(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        rules = ops.trigger_rules()
    if args.json:
        print_json(rules)
        return 0
    print_table(
        [
            {
                "name": r.name,
                "checker": r.trigger_event,
                "state": "on" if r.enabled else "off",
                "fires": r.fire_count,
                "last fired": when(r.last_fired_at),
                "next": _next(r),
                "cooldown": f"{r.cooldown_minutes} min" + (f" +{r.jitter_minutes}" if r.jitter_minutes else ""),
            }
            for r in rules
        ],
        ["name", "checker", "state", "fires", "last fired", "next", "cooldown"],
    )
    return 0


def _fires_table(rule: TriggerRule) -> None:
    print_table(
        [
            {
                "event": f["event_id"],
                "fired": when(parse_time(f.get("fired_at"))),
                "proposal": f.get("proposal_id"),
                "status": f.get("status"),
                "mission": f.get("mission_id"),
                "reason": f.get("reason"),
            }
            for f in rule.recent_fires
        ],
        ["event", "fired", "proposal", "status", "mission", "reason"],
    )


def _show(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        rule = ops.trigger_rule(args.name)
    if args.json:
        print_json(rule)
        return 0
    print_fields(
        [
            ("name", rule.name),
            ("checker", rule.trigger_event),
            ("enabled", "yes" if rule.enabled else "no"),
            ("fires", f"{rule.fire_count} (last {when(rule.last_fired_at)})"),
            ("next", _next(rule)),
            ("updated", when(rule.updated_at)),
        ]
    )
    sys.stdout.write("definition (what `agent-ops triggers set` takes):\n")
    sys.stdout.write(json.dumps(rule.definition(), indent=2) + "\n")
    sys.stdout.write("recent firings:\n")
    _fires_table(rule)
    return 0


def _documents(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rule documents to write: JSON from the argument, --file PATH, or - for stdin; one rule or a list."""
    if (args.document is None) == (args.file is None):
        raise CliError("give the rule as JSON, or --file PATH (- for stdin), not both", exit_code=EXIT_USAGE)
    source = args.file or "the JSON argument"
    if args.file is not None:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    else:
        raw = sys.stdin.read() if args.document == "-" else args.document
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise CliError(f"{source}: not valid JSON ({error})", exit_code=EXIT_USAGE) from None
    documents = value if isinstance(value, list) else [value]
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise CliError(f"{source}: a rule is a JSON object (or a list of them)", exit_code=EXIT_USAGE)
    return [{k: v for k, v in d.items() if k not in BOOKKEEPING} for d in documents]


def _said(change: TriggerRuleChange) -> str:
    name = change.rule.name
    if change.action == "unchanged":
        return f"{name}: unchanged"
    if change.action == "updated":
        return f"{name}: updated ({', '.join(change.changed)})"
    if change.action == "created":
        return f"{name}: created ({'enabled' if change.rule.enabled else 'disabled'})"
    return f"{name}: {change.action}"


def _show_changes(args: argparse.Namespace, changes: list[TriggerRuleChange]) -> None:
    if args.json:
        print_json(changes[0] if len(changes) == 1 else changes)
    else:
        for change in changes:
            sys.stdout.write(_said(change) + "\n")


def _set(args: argparse.Namespace) -> int:
    documents = _documents(args)
    changes: list[TriggerRuleChange] = []
    with open_ops(args) as ops:
        for document in documents:
            changes.append(ops.set_trigger_rule(document, who(args)))
    _show_changes(args, changes)
    return 0


def _switch(args: argparse.Namespace, *, enabled: bool) -> int:
    with open_ops(args) as ops:
        change = ops.set_trigger_enabled(args.name, enabled, who(args))
    _show_changes(args, [change])
    return 0


def _delete(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        change = ops.delete_trigger_rule(args.name, who(args))
    _show_changes(args, [change])
    return 0


def _outcome(preview: TriggerPreview) -> str | None:
    if preview.invalid:
        return f"refused by the proposal service: {preview.invalid}"
    if preview.outcome is None:
        return None
    reason = preview.outcome.get("reason")
    return str(preview.outcome.get("status")) + (f": {reason}" if reason else "")


def _due(preview: TriggerPreview) -> str:
    if not preview.enabled:
        return "no (disabled)"
    return "yes" if preview.due else f"no (next {when(preview.next_due_at)})"


def _preview(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.file is None):
        raise CliError("give a rule NAME, or --file PATH (- for stdin) with a draft, not both", exit_code=EXIT_USAGE)
    with open_ops(args) as ops:
        if args.file is not None:
            args.document = None
            drafts = _documents(args)
            if len(drafts) != 1:
                raise CliError(f"{args.file}: preview takes one rule", exit_code=EXIT_USAGE)
            preview = ops.preview_trigger_rule(rule=drafts[0])
        else:
            preview = ops.preview_trigger_rule(args.name)
    if args.json:
        print_json(preview)
        return 0
    print_fields(
        [
            ("rule", f"{preview.name} ({'saved' if preview.saved else 'draft'}, {preview.trigger_event})"),
            ("due", _due(preview)),
            ("checker", preview.checker if preview.error is None else f"error: {preview.error}"),
            ("matches", "yes" if preview.matches else "no"),
            ("dedupe key", preview.dedupe_key),
            ("duplicate of", f"proposal #{preview.duplicate_of}" if preview.duplicate_of else None),
            ("outcome", _outcome(preview)),
            ("would propose", "yes" if preview.would_propose else "no"),
        ]
    )
    if preview.proposal is not None:
        sys.stdout.write("proposal:\n" + json.dumps(preview.proposal, indent=2) + "\n")
    return 0


def register(commands: Any) -> None:
    common = connection_options()
    triggers = commands.add_parser(
        "triggers",
        help="trigger rules: list, show, set, enable, disable, delete, preview (a dry run)",
        description="Trigger rules propose work at each heartbeat. Every change goes through the SQL, which "
        "validates it and writes a trigger:* event; a refused rule exits 2 with the field named, an unknown one 3.",
    )
    actions = triggers.add_subparsers(dest="triggers_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="every rule: checker, state, fires, last and next")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", parents=[common], help="one rule: its definition and latest firings")
    show.add_argument("name")
    show.set_defaults(handler=_show)

    put = actions.add_parser(
        "set",
        parents=[common],
        help="create or update rules from JSON (upsert by name)",
        description="A rule document: {name, trigger_event, conditions, action_config, cooldown_minutes?, "
        "skip_probability?, jitter_minutes?, enabled?}, or a list of them (each saved on its own; the first refused "
        "one stops). A new rule starts disabled unless it says enabled; an update keeps the switch unless it says. "
        "The output of `show --json` or `list --json` can be edited and set again.",
        epilog="""example: agent-ops triggers set '{"name": "quiet-day", "trigger_event": "absence", """
        """"conditions": {"event_type": "content:published", "lookback_minutes": 1440}, "action_config": """
        """{"agent_id": "observer", "title": "Nothing published today", "steps": [{"kind": "analyze"}]}}'""",
    )
    put.add_argument("document", nargs="?", metavar="JSON", help="the rule as JSON, or - for stdin")
    put.add_argument("--file", metavar="PATH", help="a file with the rule (or a list of rules), or - for stdin")
    put.add_argument("--by", help="who makes the change (default: your user name)")
    put.set_defaults(handler=_set)

    for verb, enabled in (("enable", True), ("disable", False)):
        switch = actions.add_parser(
            verb,
            parents=[common],
            help="switch a rule on (it is checked first)" if enabled else "switch a rule off",
        )
        switch.add_argument("name")
        switch.add_argument("--by", help="who (default: your user name)")
        switch.set_defaults(handler=lambda args, on=enabled: _switch(args, enabled=on))

    delete = actions.add_parser(
        "delete", parents=[common], help="delete a rule (its trigger:deleted event keeps the definition)"
    )
    delete.add_argument("name")
    delete.add_argument("--by", help="who (default: your user name)")
    delete.set_defaults(handler=_delete)

    preview = actions.add_parser(
        "preview",
        parents=[common],
        help="a dry run: what a rule would propose now (writes nothing)",
        description="What the checker says now, the proposal the heartbeat would send, and what the proposal "
        "service would decide. A saved rule by NAME, or a draft from --file (not saved).",
    )
    preview.add_argument("name", nargs="?")
    preview.add_argument("--file", metavar="PATH", help="a draft rule document, or - for stdin")
    preview.set_defaults(handler=_preview)
