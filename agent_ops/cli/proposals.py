"""`agent-ops propose | approve | reject | cancel`: putting work into the loop and deciding on it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_result, who
from agent_ops.cli.errors import CliError
from agent_ops.models import PROPOSAL_SOURCES, MissionOutcome, ProposalResult

EXIT_REFUSED = 4


def parse_step(text: str) -> dict[str, Any]:
    """`kind` or `kind:{json payload}`."""
    kind, _, payload = text.partition(":")
    step: dict[str, Any] = {"kind": kind.strip()}
    if payload.strip():
        try:
            step["payload"] = json.loads(payload)
        except ValueError as error:
            raise CliError(f"--step {kind}: payload is not valid JSON ({error})", exit_code=2) from None
    return step


def _proposal_document(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.file is None:
        return None
    raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise CliError(f"{args.file}: not valid JSON ({error})", exit_code=2) from None
    if not isinstance(document, dict):
        raise CliError(f"{args.file}: a proposal is a JSON object", exit_code=2)
    return document


def _show_proposal(args: argparse.Namespace, result: ProposalResult) -> int:
    print_result(
        args,
        result,
        [
            ("proposal", result.proposal_id),
            ("status", result.status + (" (duplicate)" if result.duplicate else "")),
            ("mission", result.mission_id),
            ("reason", result.reason),
        ],
    )
    return EXIT_REFUSED if result.status == "rejected" else 0


def _propose(args: argparse.Namespace) -> int:
    document = _proposal_document(args)
    with open_ops(args) as ops:
        if document is not None:
            return _show_proposal(args, ops.propose_raw(document))
        if not (args.agent and args.title and args.step):
            raise CliError("propose needs --agent, --title and at least one --step (or --file)", exit_code=2)
        result = ops.propose(
            args.agent,
            args.title,
            [parse_step(s) for s in args.step],
            source=args.source,
            description=args.description,
            dedupe_key=args.dedupe_key,
        )
    return _show_proposal(args, result)


def _approve(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        return _show_proposal(args, ops.approve(args.proposal_id, who(args)))


def _reject(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        _show_proposal(args, ops.reject(args.proposal_id, args.reason, who(args)))
    return 0


def _show_outcome(args: argparse.Namespace, outcome: MissionOutcome) -> None:
    print_result(
        args,
        outcome,
        [
            ("mission", outcome.mission_id),
            ("status", outcome.status),
            ("reason", outcome.reason),
            ("cancelled steps", outcome.cancelled_steps),
        ],
    )


def _cancel(args: argparse.Namespace) -> int:
    with open_ops(args) as ops:
        _show_outcome(args, ops.cancel(args.mission_id, args.reason))
    return 0


def register(commands: Any) -> None:
    common = connection_options()
    propose = commands.add_parser(
        "propose",
        parents=[common],
        help="propose work (the one entry point: gates, auto-approve, mission)",
        description="Propose work through ops_create_proposal. Exit 0 when accepted or pending, 4 when rejected.",
        epilog='example: agent-ops propose --agent brain --title "Research pricing" --step crawl '
        '--step \'analyze:{"topic": "pricing"}\'',
    )
    propose.add_argument("--agent", help="the proposing agent's id")
    propose.add_argument("--title", help="what the work is")
    propose.add_argument(
        "--step", action="append", metavar="KIND[:JSON]", help="a step, in order; repeat for more steps"
    )
    propose.add_argument("--source", default="api", choices=PROPOSAL_SOURCES)
    propose.add_argument("--description")
    propose.add_argument("--dedupe-key", help="idempotency key: the same key returns the first result")
    propose.add_argument("--file", metavar="PATH", help="a proposal JSON document, or - for stdin")
    propose.set_defaults(handler=_propose)

    approve = commands.add_parser(
        "approve",
        parents=[common],
        help="approve a pending proposal (gates run again)",
        description="Approve a pending proposal. The gates run again, so it may end rejected (exit 4).",
    )
    approve.add_argument("proposal_id", type=int)
    approve.add_argument("--by", help="who decides (default: your user name)")
    approve.set_defaults(handler=_approve)

    reject = commands.add_parser("reject", parents=[common], help="reject a pending proposal with a reason")
    reject.add_argument("proposal_id", type=int)
    reject.add_argument("--reason", required=True)
    reject.add_argument("--by", help="who decides (default: your user name)")
    reject.set_defaults(handler=_reject)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel an approved or running mission")
    cancel.add_argument("mission_id", type=int)
    cancel.add_argument("--reason", required=True)
    cancel.set_defaults(handler=_cancel)
