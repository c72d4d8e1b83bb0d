"""JSON nested too deeply for Python, planted in the database the way old rows may hold it.

The SQL limits the nesting of new inputs, so the rows are written directly as the table owner with
triggers off (`session_replication_role = replica`): what a database from before that limit may contain.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

DEPTH = 3000  # 12 KiB of brackets: json.loads raises RecursionError on it


def deep_array(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def plant(conn: psycopg.Connection, table: str, column: str, row_id: int, template: str = '{"deep": DEEP}') -> None:
    """Set `table.column` of row `row_id` to `template` with DEEP replaced by 3,000 nested arrays."""
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")  # no trigger sees this write
        conn.execute(
            sql.SQL("update public.{} set {} = %s::jsonb where id = %s").format(
                sql.Identifier(table), sql.Identifier(column)
            ),
            (template.replace("DEEP", deep_array()), row_id),
        )


def depth_of(value: object) -> int:
    """How many containers deep `value` goes (iterative)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest
