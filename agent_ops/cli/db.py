"""`agent-ops db start|stop|status|url` and `agent-ops migrate`: the embedded server and the schema."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from agent_ops.cli.errors import CliError
from agent_ops.cli.output import emit_json, note
from agent_ops.config import redact_url
from agent_ops.localpg import LocalPostgres, LocalPostgresError, PostgresNotInstalledError
from agent_ops.migrations import ChangedMigrationError, MigrationError, apply_seed, migrate

Handler = Callable[[argparse.Namespace], int]


@contextmanager
def _server_errors() -> Iterator[None]:
    try:
        yield
    except PostgresNotInstalledError as error:
        raise CliError(str(error), exit_code=2) from None
    except LocalPostgresError as error:
        raise CliError(str(error)) from None


def _start(args: argparse.Namespace) -> int:
    with _server_errors():
        server = LocalPostgres()
        was_running = server.status().running
        status = server.start(progress=note)
    if was_running:
        note(f"already running on 127.0.0.1:{status.port} (pid {status.pid})")
    else:
        note(f"PostgreSQL running on 127.0.0.1:{status.port}, data in {status.data_dir}")
    print(status.url())
    return 0


def _stop(args: argparse.Namespace) -> int:
    with _server_errors():
        stopped = LocalPostgres().stop(progress=note)
    note("stopped" if stopped else "not running")
    return 0


def _destroy(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("this deletes the embedded server's databases; pass --yes to confirm", exit_code=2)
    with _server_errors():
        removed = LocalPostgres().destroy(progress=note)
    note("removed " + ", ".join(str(p) for p in removed) if removed else "nothing to remove")
    return 0


def _status(args: argparse.Namespace) -> int:
    with _server_errors():
        server = LocalPostgres()
        status = server.status()
    info: dict[str, Any] = {
        "running": status.running,
        "port": status.port,
        "pid": status.pid,
        "data_dir": str(status.data_dir),
        "state_dir": str(server.home),
        "url": status.url() if status.running else None,
    }
    if args.json:
        emit_json(info)
    elif status.running:
        # The password stays off the screen; `db url` and --json print it for scripts.
        print(f"running  pid {status.pid}  port {status.port}  data {status.data_dir}\n{redact_url(info['url'])}")
    else:
        print(f"stopped  data {status.data_dir}")
    return 0 if status.running else 3


def _url(args: argparse.Namespace) -> int:
    with _server_errors():
        status = LocalPostgres().status()
    if not status.running:
        raise CliError("the embedded PostgreSQL server is not running: run `agent-ops db start`", exit_code=3)
    print(status.url(args.dbname))
    return 0


def resolve_database_url(explicit: str | None) -> str:
    """--database-url, then DATABASE_URL, then the running embedded server."""
    url = explicit or os.environ.get("DATABASE_URL")
    if url:
        return url
    with _server_errors():
        status = LocalPostgres().status()
    if not status.running:
        raise CliError(
            "no database: pass --database-url, set DATABASE_URL, or start the embedded server with "
            "`agent-ops db start`",
            exit_code=2,
        )
    return status.url()


def _migrate(args: argparse.Namespace) -> int:
    url = resolve_database_url(args.database_url)
    try:
        applied = migrate(url, include_all=args.include_all, allow_changed=args.allow_changed, progress=note)
        seeded = apply_seed(url, progress=note) if args.seed else False
    except ChangedMigrationError as error:
        raise CliError(str(error), exit_code=2) from None
    except MigrationError as error:
        raise CliError(str(error)) from None
    except psycopg.OperationalError as error:
        raise CliError(f"cannot connect to the database: {error}".strip()) from None
    if args.json:
        emit_json({"applied": [m.path.name for m in applied], "seeded": seeded})
    else:
        note(f"{len(applied)} migration(s) applied" + ("; seed loaded" if seeded else ""))
    return 0


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="the embedded local PostgreSQL server", description=_start.__doc__)
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    start = db_commands.add_parser("start", help="initialise if needed and start; prints the URL")
    start.set_defaults(handler=_start)
    stop = db_commands.add_parser("stop", help="stop the server (fast shutdown)")
    stop.set_defaults(handler=_stop)
    status = db_commands.add_parser("status", help="running or stopped (exit 3 when stopped)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
    destroy = db_commands.add_parser("destroy", help="stop the server and delete its data, socket and log")
    destroy.add_argument("--yes", action="store_true", help="confirm: every local database is deleted")
    destroy.set_defaults(handler=_destroy)
    url = db_commands.add_parser("url", help="print the connection URL (exit 3 when stopped)")
    url.add_argument("--dbname", default="postgres", help="database name in the URL (default: postgres)")
    url.set_defaults(handler=_url)

    mig = commands.add_parser(
        "migrate",
        help="apply pending supabase/migrations, recorded like `supabase db push`",
        description="Apply pending migrations in version order, each file in one transaction, recorded in "
        "supabase_migrations.schema_migrations exactly as the Supabase CLI records them.",
    )
    mig.add_argument("--database-url", help="target database (default: $DATABASE_URL, else the embedded server)")
    mig.add_argument("--seed", action="store_true", help="also load supabase/seed.sql (default policy)")
    mig.add_argument(
        "--include-all", action="store_true", help="apply local files older than the newest applied version"
    )
    mig.add_argument(
        "--allow-changed",
        action="store_true",
        help="go on when an applied migration's file has changed since (default: refuse, exit 2)",
    )
    mig.add_argument("--json", action="store_true", help="machine-readable output")
    mig.set_defaults(handler=_migrate)
