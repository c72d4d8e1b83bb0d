"""`agent-ops demo [--seconds N]`: the live loop on the local database (what `make run` runs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from agent_ops import demo
from agent_ops.cli.context import connection_options, load_settings
from agent_ops.cli.errors import CliError
from agent_ops.console import ConsoleAccess
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
    key_file = state_dir() / "console-key"
    access = ConsoleAccess.local(settings, key_file)
    configured = ConsoleAccess.from_settings(settings).open
    hint = "CONSOLE_KEY (or OPS_KEY)" if configured else f"the key in {key_file}"
    port = args.console_port
    if port is None:
        try:
            port = int(os.environ.get("CONSOLE_PORT") or 8080)
        except ValueError:
            raise CliError("CONSOLE_PORT must be a port number", exit_code=2) from None
    if not 0 <= port <= 65535:
        raise CliError("the console port (--console-port, CONSOLE_PORT) must be from 0 to 65535", exit_code=2)
    return demo.run(
        settings.database_url.reveal(), seconds, state_dir() / "log", console=access, console_port=port, key_hint=hint
    )


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        parents=[connection_options()],
        help="run the live loop on the local database: triggers, reactions, a worker, the console, a terminal view",
        description="Loads a demo policy and trigger rules into the local database, starts a worker and the "
        "heartbeat, and shows proposals, missions and events until Ctrl-C (or --seconds / DEMO_SECONDS, then "
        "a summary; exit 1 if no trigger- and reaction-born mission completed).",
    )
    parser.add_argument("--seconds", type=float, help="stop after this long and print a summary")
    parser.add_argument(
        "--console-port", type=int, help="serve the ops console here (default CONSOLE_PORT or 8080; taken: any free)"
    )
    parser.set_defaults(handler=_demo)
