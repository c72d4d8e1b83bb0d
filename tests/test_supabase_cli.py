"""The real Supabase CLI accepts our folder: db push, migration list, db advisors, db lint.

These are the commands a Supabase user runs; they need no Docker when pointed at a database URL.
`make test` installs the pinned CLI from package-lock.json; without it these tests fail rather than skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import psycopg
import pytest

from agent_ops.migrations import list_migrations, migrate
from tests.kit.database import ROOT

CLI = ROOT / "node_modules" / ".bin" / "supabase"
MIGRATIONS = ROOT / "supabase" / "migrations"


def supabase(*args: str) -> subprocess.CompletedProcess[str]:
    if not CLI.exists():
        pytest.fail("the Supabase CLI is not installed: run `make setup` (npm install --no-save)")
    return subprocess.run(
        [str(CLI), *args, "--workdir", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )


def history(url: str) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_db_push_applies_every_migration_and_list_shows_them(empty_db_url: str) -> None:
    pushed = supabase("db", "push", "--db-url", empty_db_url, "--yes")
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    versions = [m.version for m in list_migrations(MIGRATIONS)]
    assert [v for v, _, _ in history(empty_db_url)] == versions

    listed = supabase("migration", "list", "--db-url", empty_db_url)
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.count("|") >= 2]
    applied = {cells[0].strip(" `") for cells in (row.split("|") for row in rows) if cells[1].strip(" `")}
    assert applied >= set(versions)


def test_cli_pushed_database_is_up_to_date_for_agent_ops_migrate(empty_db_url: str) -> None:
    assert supabase("db", "push", "--db-url", empty_db_url, "--yes").returncode == 0
    assert migrate(empty_db_url, MIGRATIONS) == []


def test_agent_ops_migrated_database_is_up_to_date_for_the_cli(make_empty_db: Callable[[], str]) -> None:
    ours, theirs = make_empty_db(), make_empty_db()
    migrate(ours, MIGRATIONS)
    pushed = supabase("db", "push", "--db-url", ours, "--yes")
    assert pushed.returncode == 0, pushed.stderr
    assert "up to date" in (pushed.stdout + pushed.stderr)
    # The history rows are the same, statement for statement, as the CLI writes them itself.
    assert supabase("db", "push", "--db-url", theirs, "--yes").returncode == 0
    assert history(ours) == history(theirs)


def test_security_advisors_report_nothing(db_url: str) -> None:
    result = supabase(
        "db", "advisors", "--db-url", db_url, "--type", "security", "--level", "warn", "--fail-on", "warn"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No issues found" in result.stdout + result.stderr


def test_security_advisors_would_catch_an_exposed_table(db_url: str, conn: psycopg.Connection) -> None:
    # The check above must be able to fail: an RLS-less table readable by anon is flagged.
    conn.execute("create table public.leaky (id int)")
    conn.execute("grant select on public.leaky to anon")
    result = supabase(
        "db", "advisors", "--db-url", db_url, "--type", "security", "--level", "warn", "--fail-on", "warn"
    )
    assert result.returncode != 0
    assert "rls_disabled_in_public" in result.stdout + result.stderr


def test_plpgsql_lint_reports_nothing(db_url: str) -> None:
    result = supabase("db", "lint", "--db-url", db_url, "--level", "warning", "--fail-on", "warning")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No schema errors found" in result.stdout + result.stderr


def test_plpgsql_lint_would_catch_a_broken_function(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute(
        "create function ops_internal.broken() returns int language plpgsql set search_path = '' "
        "as $$ begin return (select no_such_column from public.ops_policy); end $$"
    )
    result = supabase("db", "lint", "--db-url", db_url, "--level", "warning", "--fail-on", "warning")
    assert result.returncode != 0
    assert "no_such_column" in result.stdout + result.stderr
