"""Apply `supabase/migrations/*.sql` and record them exactly as `supabase db push` does.

The history lives in `supabase_migrations.schema_migrations (version, name, statements)`; a file is split
into statements by the same rules as the Supabase CLI, each file runs in one transaction together with its
history row. A database migrated by either tool is therefore up to date for the other.

Released migrations never change (supabase/migrations.lock). `supabase db push` compares versions only, so a
file edited after a database applied it would silently never reach that database; `migrate` also compares
the statements it recorded with the file and refuses such a database unless told to go on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from agent_ops.project import supabase_dir

FILE_PATTERN = re.compile(r"^([0-9]+)_(.*)\.sql$")
# A fixed key so two `migrate` runs against one database queue up instead of racing.
MIGRATE_LOCK_KEY = 0x0A6E_7095

HISTORY_DDL = (
    "SET lock_timeout = '4s'",
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.seed_files (path text NOT NULL PRIMARY KEY, hash text NOT NULL)",
)

Progress = Callable[[str], None]


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file and the failing statement."""


class ChangedMigrationError(MigrationError):
    """Applied migrations whose files changed since; the message names each file."""

    def __init__(self, changed: list[MigrationFile]) -> None:
        self.changed = changed
        names = ", ".join(m.path.name for m in changed)
        super().__init__(
            f"applied migration(s) changed since this database applied them: {names}. A released migration must "
            "never change: restore the file and put the change in a new migration (`create or replace`). "
            "Pass --allow-changed to migrate anyway; the database keeps what it applied."
        )


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path

    @property
    def statements(self) -> list[str]:
        return split_statements(self.path.read_text())


def _skip_literal(sql: str, i: int) -> int | None:
    """If a comment, quote, dollar quote or backslash escape starts at `i`, the index just past it."""
    n = len(sql)
    if sql.startswith("--", i):
        newline = sql.find("\n", i + 2)
        return n if newline < 0 else newline + 1
    if sql.startswith("/*", i):
        depth, i = 1, i + 2
        while i < n and depth:
            step = 2 if sql.startswith(("/*", "*/"), i) else 1
            depth += 1 if sql.startswith("/*", i) else -1 if sql.startswith("*/", i) else 0
            i += step
        return i
    c = sql[i]
    if c in "'\"":
        i += 1
        while i < n:
            if sql[i] == c and sql.startswith(c * 2, i):
                i += 2
            elif sql[i] == c:
                return i + 1
            else:
                i += 1
        return n
    if c == "$":
        tag = re.match(r"\$\w*\$", sql[i:])
        if tag:
            close = sql.find(tag.group(0), i + len(tag.group(0)))
            return n if close < 0 else close + len(tag.group(0))
    if c == "\\":
        return i + 2
    return None


def split_statements(sql: str) -> list[str]:
    """Split SQL the way the Supabase CLI does before it records `statements`.

    A `;` ends a statement unless it sits in a quote, a dollar quote, a comment, parentheses or a
    BEGIN ATOMIC body. Each piece keeps its comments; trailing `;` and surrounding white space are trimmed
    and empty pieces dropped.
    """
    pieces: list[str] = []
    start = i = parens = 0
    in_atomic = False
    while i < len(sql):
        skipped = _skip_literal(sql, i)
        if skipped is not None:
            i = skipped
            continue
        c = sql[i]
        if c in "()":
            parens = parens + 1 if c == "(" else max(parens - 1, 0)
        elif c in "cC" and i >= 6 and sql[i - 5 : i + 1].lower() == "atomic" and sql[i - 6].isspace():
            in_atomic = True
        elif in_atomic and c in "dD" and sql[i - 2 : i + 1].lower() == "end":
            in_atomic = False
        elif c == ";" and not parens and not in_atomic:
            pieces.append(sql[start : i + 1])
            start = i + 1
        i += 1
    pieces.append(sql[start:])
    return [s for s in (p.rstrip(";").strip() for p in pieces) if s]


def list_migrations(directory: Path | None = None) -> list[MigrationFile]:
    folder = directory or supabase_dir() / "migrations"
    files = []
    for path in sorted(folder.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if match:
            files.append(MigrationFile(version=match.group(1), name=match.group(2), path=path))
    return files


def _ensure_history(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for statement in HISTORY_DDL:
            conn.execute(statement)


def applied_versions(conn: psycopg.Connection) -> list[str]:
    return list(applied_statements(conn))


def applied_statements(conn: psycopg.Connection) -> dict[str, list[str] | None]:
    """Each applied version with the statements recorded for it (None where a repair wrote no statements)."""
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("select version, statements from supabase_migrations.schema_migrations order by 1")
    return {version: statements for version, statements in rows}


def changed_migrations(local: list[MigrationFile], applied: dict[str, list[str] | None]) -> list[MigrationFile]:
    """Local files whose statements differ from what the database recorded when it applied them."""
    return [
        m
        for m in local
        if m.version in applied and applied[m.version] is not None and applied[m.version] != m.statements
    ]


def _error_line(migration: MigrationFile, statement: str, error: psycopg.Error) -> str:
    """' (line N)' of the file where Postgres located the error, when it did."""
    try:
        position = int(error.diag.statement_position or 0)
    except ValueError:
        position = 0
    content = migration.path.read_text()
    start = content.find(statement)
    if position <= 0 or start < 0:
        return ""
    return f" (line {content.count(chr(10), 0, start + position - 1) + 1})"


def _describe_failure(migration: MigrationFile, index: int, statement: str, error: psycopg.Error) -> str:
    diag = error.diag
    head = "\n".join(statement.splitlines()[:6])
    where = _error_line(migration, statement, error)
    lines = [
        f"migration {migration.path.name} failed at statement {index + 1}{where}: {diag.message_primary or error}",
    ]
    if diag.message_detail:
        lines.append(f"detail: {diag.message_detail}")
    if diag.message_hint:
        lines.append(f"hint: {diag.message_hint}")
    lines.append(f"statement:\n{head}")
    lines.append("nothing from this file was applied and no history row was written")
    return "\n".join(lines)


def _apply_one(conn: psycopg.Connection, migration: MigrationFile) -> None:
    statements = migration.statements
    with conn.transaction():
        conn.execute("RESET ALL")
        for index, statement in enumerate(statements):
            try:
                conn.execute(statement.encode())
            except psycopg.Error as error:
                raise MigrationError(_describe_failure(migration, index, statement, error)) from error
        conn.execute(
            "INSERT INTO supabase_migrations.schema_migrations(version, name, statements) VALUES (%s, %s, %s)",
            (migration.version, migration.name, statements),
        )


def migrate(
    database_url: str,
    directory: Path | None = None,
    *,
    include_all: bool = False,
    allow_changed: bool = False,
    progress: Progress = lambda _m: None,
) -> list[MigrationFile]:
    """Apply pending migrations in version order, each in its own transaction. Returns what was applied.

    Refuses (ChangedMigrationError) when an applied file no longer matches what was applied, unless
    `allow_changed`, which only reports it through `progress`.
    """
    local = list_migrations(directory)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        try:
            _ensure_history(conn)
            recorded = applied_statements(conn)
            remote = list(recorded)
            changed = changed_migrations(local, recorded)
            if changed and not allow_changed:
                raise ChangedMigrationError(changed)
            for migration in changed:
                progress(f"warning: {migration.path.name} changed since it was applied; the database keeps the old one")
            local_versions = {m.version for m in local}
            unknown = [v for v in remote if v not in local_versions]
            if unknown:
                raise MigrationError(
                    "the database has migrations that are not in the local folder: "
                    f"{', '.join(unknown)} (pull them, or repair the history with "
                    "`supabase migration repair --status reverted <version>`)"
                )
            pending = [m for m in local if m.version not in set(remote)]
            newest = max(remote, default="")
            early = [m.path.name for m in pending if m.version < newest]
            if early and not include_all:
                raise MigrationError(
                    f"local migrations older than the newest applied one ({newest}): {', '.join(early)}; "
                    "rename them to a newer timestamp or pass --include-all"
                )
            for migration in pending:
                progress(f"applying {migration.path.name}")
                _apply_one(conn, migration)
            return pending
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))


def apply_seed(database_url: str, seed_file: Path | None = None, progress: Progress = lambda _m: None) -> bool:
    """Run `supabase/seed.sql` unless this exact content was already applied (tracked like the CLI does).

    The seed is written to be idempotent, so a changed seed is run again to add new defaults.
    """
    path = seed_file or supabase_dir() / "seed.sql"
    content = path.read_text()
    digest = hashlib.sha256(content.encode()).hexdigest()
    key = "supabase/seed.sql"
    with psycopg.connect(database_url, autocommit=True) as conn:
        _ensure_history(conn)
        row = conn.execute("select hash from supabase_migrations.seed_files where path = %s", (key,)).fetchone()
        if row and row[0] == digest:
            return False
        progress(f"seeding from {path.name}")
        with conn.transaction():
            for index, statement in enumerate(split_statements(content)):
                try:
                    conn.execute(statement.encode())
                except psycopg.Error as error:
                    raise MigrationError(
                        f"seed {path.name} failed at statement {index + 1}: {error.diag.message_primary or error}"
                    ) from error
            conn.execute(
                "insert into supabase_migrations.seed_files(path, hash) values (%s, %s) "
                "on conflict (path) do update set hash = excluded.hash",
                (key, digest),
            )
        return True
