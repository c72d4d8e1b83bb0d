"""`agent-ops migrate`: splitting, ordering, atomic files, history rows, idempotence."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psycopg
import pytest

from agent_ops.migrations import (
    ChangedMigrationError,
    MigrationError,
    apply_seed,
    list_migrations,
    migrate,
    split_statements,
)
from tests.kit.database import ROOT
from tests.test_cli import cli

MIGRATIONS = ROOT / "supabase" / "migrations"


def test_split_keeps_semicolons_inside_literals_comments_and_bodies() -> None:
    sql = """
    -- leading comment; with a semicolon
    create table t (a text default ';', b text default 'it''s; fine');
    /* block; /* nested; */ still; */ select 1;
    create function f() returns int language plpgsql as $body$ begin return 1; end; $body$;
    select $$a;b$$, "we;ird" from (select 1; ) x;
    select 2
    """
    assert split_statements(sql) == [
        "-- leading comment; with a semicolon\n    create table t (a text default ';', b text default 'it''s; fine')",
        "/* block; /* nested; */ still; */ select 1",
        "create function f() returns int language plpgsql as $body$ begin return 1; end; $body$",
        'select $$a;b$$, "we;ird" from (select 1; ) x',
        "select 2",
    ]


def test_split_drops_empty_statements() -> None:
    assert split_statements(";;\n  ;select 1;;") == ["select 1"]


def test_migration_files_are_named_like_the_supabase_cli_writes_them() -> None:
    files = list_migrations(MIGRATIONS)
    assert files, "no migrations found"
    for migration in files:
        assert len(migration.version) == 14, migration.path.name
        assert re.fullmatch(r"[a-z0-9_]+", migration.name), migration.path.name
    assert [m.version for m in files] == sorted(m.version for m in files)


def test_migrate_applies_everything_once_and_records_statements(empty_db_url: str) -> None:
    applied = migrate(empty_db_url, MIGRATIONS)
    assert [m.path.name for m in applied] == [m.path.name for m in list_migrations(MIGRATIONS)]
    assert migrate(empty_db_url, MIGRATIONS) == []
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in applied]
    assert all(r[2] == m.statements for r, m in zip(rows, applied, strict=True))


def test_failed_file_leaves_no_trace_and_names_the_file(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000000_good.sql").write_text("create table public.good_one (id int);")
    (folder / "20990101000100_broken.sql").write_text(
        "create table public.half_done (id int);\ninsert into public.half_done values (1);\nselect 1/0;"
    )
    with pytest.raises(MigrationError) as raised:
        migrate(empty_db_url, folder)
    message = str(raised.value)
    assert "20990101000100_broken.sql" in message
    assert "statement 3" in message
    assert "division by zero" in message
    with psycopg.connect(empty_db_url) as conn:
        versions = [r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")]
        half_done = conn.execute("select to_regclass('public.half_done')").fetchone()
        good = conn.execute("select to_regclass('public.good_one')").fetchone()
    assert versions == ["20990101000000"]
    assert half_done == (None,)
    assert good == ("good_one",)


def test_an_error_postgres_can_locate_is_reported_with_its_line(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000000_typo.sql").write_text(
        "create table public.t (id int);\n\nselect\n  id,\n  no_such_column\nfrom public.t;\n"
    )
    with pytest.raises(MigrationError, match=r"20990101000000_typo.sql failed at statement 2 \(line 5\): column"):
        migrate(empty_db_url, folder)


def test_out_of_order_file_is_refused_unless_asked(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000200_later.sql").write_text("select 1;")
    migrate(empty_db_url, folder)
    (folder / "20990101000100_earlier.sql").write_text("create table public.early (id int);")
    with pytest.raises(MigrationError, match="older than the newest applied"):
        migrate(empty_db_url, folder)
    assert [m.version for m in migrate(empty_db_url, folder, include_all=True)] == ["20990101000100"]


def test_database_ahead_of_the_folder_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    migrate(empty_db_url, folder)
    newest = sorted(folder.glob("*.sql"))[-1]
    newest.unlink()
    with pytest.raises(MigrationError, match=newest.name.split("_", 1)[0]):
        migrate(empty_db_url, folder)


def test_seed_runs_once_per_content_and_keeps_edited_policy(db_url: str, tmp_path: Path) -> None:
    seed = ROOT / "supabase" / "seed.sql"
    assert apply_seed(db_url, seed) is False  # the template already holds this exact seed
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update public.ops_policy set value = '{\"enabled\": false}' where key = 'system'")
        changed = tmp_path / "seed.sql"
        changed.write_text(seed.read_text() + "\n-- a new default would go here\n")
        assert apply_seed(db_url, changed) is True
        value = conn.execute("select value from public.ops_policy where key = 'system'").fetchone()
    assert value == ({"enabled": False},)


def test_an_applied_migration_that_changed_is_refused_by_name(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000000_first.sql").write_text("create table public.first_one (id int);")
    edited = folder / "20990101000100_second.sql"
    edited.write_text("create table public.second_one (id int);")
    migrate(empty_db_url, folder)
    # White space between statements is not recorded, so it is no change; a changed statement is.
    edited.write_text("\n\ncreate table public.second_one (id int);\n\n")
    assert migrate(empty_db_url, folder) == []
    edited.write_text("create table public.second_one (id bigint);")
    (folder / "20990101000200_third.sql").write_text("create table public.third_one (id int);")
    with pytest.raises(ChangedMigrationError) as raised:
        migrate(empty_db_url, folder)
    assert [m.path.name for m in raised.value.changed] == [edited.name]
    assert edited.name in str(raised.value)
    assert "--allow-changed" in str(raised.value)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select to_regclass('public.third_one')").fetchone() == (None,), "nothing applied"

    notes: list[str] = []
    applied = migrate(empty_db_url, folder, allow_changed=True, progress=notes.append)
    assert [m.path.name for m in applied] == ["20990101000200_third.sql"]
    assert any(edited.name in n and "changed" in n for n in notes)


def test_the_cli_exits_2_naming_a_changed_migration(empty_db_url: str, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    folder = checkout / "supabase" / "migrations"
    folder.mkdir(parents=True)
    edited = folder / "20990101000000_only.sql"
    edited.write_text("create table public.only_one (id int);")
    assert cli("migrate", "--database-url", empty_db_url, cwd=checkout).returncode == 0
    edited.write_text("create table public.only_one (id int, note text);")
    refused = cli("migrate", "--database-url", empty_db_url, cwd=checkout)
    assert refused.returncode == 2
    assert edited.name in refused.stderr
    allowed = cli("migrate", "--database-url", empty_db_url, "--allow-changed", cwd=checkout)
    assert allowed.returncode == 0, allowed.stderr
