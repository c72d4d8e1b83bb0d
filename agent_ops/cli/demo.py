"""`agent-ops demo [--seconds N]`: the live loop on the local database (what `make run` runs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from agent_ops import demo
from agent_ops.cli.context import connection_options, load_settings
from agent_ops.cli.errors import CliError
from agent_ops.project import state_dir


def _demo(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if settings.chosen_transport != "direct" or settings.database_url is None:
        raise CliError("the demo needs a direct database (the local server, or --database-url)", exit_code=2)
    seconds = args.seconds
    if seconds is None and os.environ.get("DEMO_SECONDS"):
        try:
            seconds = float(os.environ["DEMO_SECONDS"])
        except ValueError:
            raise CliError("DEMO_SECONDS must be a number of seconds", exit_code=2) from None
    return demo.run(settings.database_url.reveal(), seconds, state_dir() / "log")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        parents=[connection_options()],
        help="run the live loop on the local database: triggers, reactions, a worker, a terminal view",
        description="Loads a demo policy and trigger rules into the local database, starts a worker and the "
        "heartbeat, and shows proposals, missions and events until Ctrl-C (or --seconds / DEMO_SECONDS, then "
        "a summary; exit 1 if no trigger- and reaction-born mission completed).",
    )
    parser.add_argument("--seconds", type=float, help="stop after this long and print a summary")
    parser.set_defaults(handler=_demo)
