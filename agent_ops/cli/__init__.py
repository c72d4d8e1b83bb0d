"""`agent-ops`: the command line for people and scripts.

Exit codes: 0 success; 1 the operation failed (database unreachable, permission denied, server error);
2 usage, configuration or invalid input; 3 not running or not found; 4 refused (a conflict, or a proposal
rejected by a gate); 5 needs attention (`status`: a stalled queue or a late heartbeat).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dotenv import load_dotenv

from agent_ops import __version__
from agent_ops.cli import db, demo, heartbeat, kinds, notify, policy, proposals, serve, triggers, views
from agent_ops.cli.errors import CliError
from agent_ops.cli.output import note
from agent_ops.config import ConfigError
from agent_ops.errors import Conflict, InvalidInput, NotFound, OpsError
from agent_ops.project import project_root

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-ops",
        description="Operate the agent-ops loop: local database, migrations, proposals, missions, spend, heartbeat.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/configuration/invalid input, 3 not running/not found, "
        "4 refused (conflict or rejected), 5 needs attention (status: a stalled queue or a late heartbeat). "
        "Every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"agent-ops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    db.register(commands)
    proposals.register(commands)
    views.register(commands)
    policy.register(commands)
    kinds.register(commands)
    triggers.register(commands)
    heartbeat.register(commands)
    notify.register(commands)
    serve.register(commands)
    demo.register(commands)
    logging.getLogger("agent_ops").addHandler(logging.NullHandler())
    return parser


def exit_code_for(error: OpsError) -> int:
    if isinstance(error, InvalidInput):
        return EXIT_USAGE
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, Conflict):
        return EXIT_REFUSED
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    # Flags win over the environment, which wins over .env: load_dotenv never overrides what is set.
    load_dotenv(project_root() / ".env", override=False)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as error:
        note(f"agent-ops: {error}")
        return error.exit_code
    except ConfigError as error:
        note(f"agent-ops: configuration: {error}")
        return EXIT_USAGE
    except OpsError as error:
        note(f"agent-ops: {type(error).__name__}: {error}")
        return exit_code_for(error)
    except KeyboardInterrupt:
        note("agent-ops: interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
