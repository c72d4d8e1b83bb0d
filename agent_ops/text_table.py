"""Plain aligned text tables: the CLI's listings, the demo's terminal view and the bench and chaos summaries."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


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
