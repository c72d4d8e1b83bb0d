"""How the CLI speaks: aligned tables for people, JSON for scripts, messages on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, sort_keys=False) + "\n")


def note(message: str) -> None:
    """Progress and diagnostics go to stderr so stdout stays clean for tables, URLs and JSON."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, max_width: int = 60) -> str:
    """A plain aligned table; long cells are cut with an ellipsis so one row stays one line."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in line] for line in cells]
    widths = [max([len(col), *(len(line[i]) for line in cells)]) for i, col in enumerate(columns)]
    header = "  ".join(col.upper().ljust(widths[i]) for i, col in enumerate(columns))
    body = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in cells]
    return "\n".join([header.rstrip(), *body]) if body else header.rstrip() + "\n(none)"


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    sys.stdout.write(table(rows, columns) + "\n")
