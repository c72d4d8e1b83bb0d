"""The guarded Supabase Cron migration: schedules the heartbeat where pg_cron lives, is a no-op elsewhere."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from agent_ops.localpg import LocalPostgres
from agent_ops.migrations import migrate
from tests.kit.database import ROOT

MIGRATIONS = ROOT / "supabase" / "migrations"


@pytest.fixture(scope="module")
def cron_server() -> Iterator[LocalPostgres]:
    """A scratch server whose `postgres` database is pg_cron's database, like a Supabase project."""
    home = ROOT / ".agent-ops" / "scratch" / f"cron-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    server = LocalPostgres(home)
    if not server.binaries.has_library("pg_cron"):
        pytest.fail("pg_cron is not installed (postgresql-15-cron); make test installs it")
    server.start()
    yield server
    server.destroy()
    shutil.rmtree(home, ignore_errors=True)


def test_heartbeat_is_scheduled_every_minute_where_pg_cron_runs(cron_server: LocalPostgres) -> None:
    url = cron_server.url("postgres")
    migrate(url, MIGRATIONS)
    migrate(url, MIGRATIONS)  # idempotent: cron.schedule upserts by name
    with psycopg.connect(url) as conn:
        jobs = conn.execute("select jobname, schedule, command from cron.job order by jobname").fetchall()
    assert jobs == [
        (
            "agent-ops-cron-cleanup",
            "17 3 * * *",
            "delete from cron.job_run_details where end_time < now() - interval '7 days'",
        ),
        ("agent-ops-heartbeat", "* * * * *", "select public.ops_heartbeat()"),
    ]


def test_elsewhere_the_schedule_migration_changes_nothing(empty_db_url: str) -> None:
    migrate(empty_db_url, MIGRATIONS)
    with psycopg.connect(empty_db_url) as conn:
        cron = conn.execute("select count(*) from pg_extension where extname = 'pg_cron'").fetchone()
        version = conn.execute(
            "select count(*) from supabase_migrations.schema_migrations where name = 'ops_heartbeat_schedule'"
        ).fetchone()
    assert cron == (0,)
    assert version == (1,)  # recorded as applied, so a later pg_cron install needs a new migration or a manual run
