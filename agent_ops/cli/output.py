"""How the CLI speaks: aligned tables for people, JSON for scripts, messages on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from agent_ops.text_table import table


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, sort_keys=False) + "\n")


def note(message: str) -> None:
    """Progress and diagnostics go to stderr so stdout stays clean for tables, URLs and JSON."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    sys.stdout.write(table(rows, columns) + "\n")
