"""What every CLI command shares: connection options, building the client, rendering results."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from agent_ops.client import Ops
from agent_ops.config import Settings
from agent_ops.localpg import with_local_fallback


def connection_options() -> argparse.ArgumentParser:
    """Options every database command takes (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--database-url", help="direct Postgres URL (default: $DATABASE_URL, else the local server)")
    group.add_argument("--transport", choices=["direct", "postgrest"], help="override the transport choice")
    parent.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return parent


def load_settings(args: argparse.Namespace) -> Settings:
    """Flags, then environment and .env; with nothing configured, the running embedded server."""
    settings = Settings.load(
        database_url=getattr(args, "database_url", None), transport=getattr(args, "transport", None)
    )
    return with_local_fallback(settings).validated()


@contextmanager
def open_ops(args: argparse.Namespace) -> Iterator[Ops]:
    settings = load_settings(args)
    with Ops(settings) as ops:
        yield ops


def who(args: argparse.Namespace) -> str:
    """Who makes a change: --by, else the user's login name."""
    return str(args.by or getpass.getuser() or "cli")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2) + "\n")


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value)) + "\n")


def when(value: datetime | None) -> str:
    """Local-free, compact UTC time: HH:MM:SS today, else the date as well."""
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    if value.date() == datetime.now(UTC).date():
        return value.strftime("%H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M")


def print_result(args: argparse.Namespace, value: Any, pairs: list[tuple[str, Any]]) -> None:
    """`value` as JSON with --json, else `pairs` aligned for people."""
    if args.json:
        print_json(value)
    else:
        print_fields(pairs)


def print_fields(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        shown = "-" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else value
        sys.stdout.write(f"{key.ljust(width)}  {shown}\n")
