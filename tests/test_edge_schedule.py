"""supabase/snippets/heartbeat_edge_schedule.sql: Supabase Cron calling the ops-heartbeat Edge Function.

The snippet runs where pg_cron really runs (a scratch server whose `postgres` database is pg_cron's, like a
Supabase project), against stand-ins for what only Supabase has: `net.http_post` (pg_net) records its
arguments, and Vault is `vault.create_secret` plus the `vault.decrypted_secrets` view. The job's command is
then run as pg_cron would run it, and the request it made is replayed against the real function.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from agent_ops.localpg import LocalPostgres
from agent_ops.migrations import migrate
from tests.kit.database import MIGRATIONS, ROOT
from tests.postgrest_standin import running
from tests.test_edge_function import OPS_KEY, SERVICE_KEY, edge_function

SNIPPET = ROOT / "supabase" / "snippets" / "heartbeat_edge_schedule.sql"
DIRECT_JOB = ("agent-ops-heartbeat", "* * * * *", "select public.ops_heartbeat()")
EDGE_JOB = "agent-ops-heartbeat-edge"

# What Supabase provides and the embedded server lacks, with the same signatures.
STAND_INS = """
create schema net;
create table net.calls (id bigserial primary key, url text, body jsonb, params jsonb, headers jsonb,
                        timeout_milliseconds integer);
create function net.http_post(url text, body jsonb default '{}'::jsonb, params jsonb default '{}'::jsonb,
                              headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
                              timeout_milliseconds integer default 5000)
returns bigint language sql as $$
  insert into net.calls (url, body, params, headers, timeout_milliseconds)
  values (url, body, params, headers, timeout_milliseconds) returning id
$$;
create schema vault;
create table vault.secrets (id uuid primary key default gen_random_uuid(), name text unique, secret text not null,
                            description text not null default '');
create view vault.decrypted_secrets as select id, name, description, secret, secret as decrypted_secret
  from vault.secrets;
create function vault.create_secret(new_secret text, new_name text default null, new_description text default '',
                                    new_key_id uuid default null)
returns uuid language sql as $$
  insert into vault.secrets (name, secret, description) values (new_name, new_secret, new_description) returning id
$$;
"""


@pytest.fixture(scope="module")
def cron_server() -> Iterator[LocalPostgres]:
    """A scratch server whose `postgres` database is pg_cron's and holds the agent-ops schema."""
    home = ROOT / ".agent-ops" / "scratch" / f"edge-cron-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    server = LocalPostgres(home)
    if not server.binaries.has_library("pg_cron"):
        pytest.fail("pg_cron is not installed (postgresql-15-cron); make test installs it")
    try:
        server.start()
        migrate(server.url("postgres"), MIGRATIONS)  # schedules agent-ops-heartbeat, as on Supabase
        yield server
    finally:
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def project(cron_server: LocalPostgres) -> Iterator[psycopg.Connection]:
    """The project's database with the stand-ins and the default (direct) schedule; reset afterwards."""
    url = cron_server.url("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(STAND_INS)
        conn.execute("select cron.schedule(%s, %s, %s)", DIRECT_JOB)
        try:
            yield conn
        finally:
            conn.execute("select cron.unschedule(jobname) from cron.job where jobname = %s", (EDGE_JOB,))
            conn.execute("drop schema net, vault cascade")


def jobs(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute("select jobname, schedule, command from cron.job").fetchall()
    return {name: (schedule, command) for name, schedule, command in rows}


def run_snippet(conn: psycopg.Connection) -> list[str]:
    """Runs the file as a user would (psql or the SQL editor); returns the notices it raised."""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(SNIPPET.read_text())
    return notices


def run_job(conn: psycopg.Connection) -> dict[str, Any]:
    """The edge job's command, run as pg_cron runs it; returns the request net.http_post was given."""
    command = jobs(conn)[EDGE_JOB][1]
    found = conn.execute(command).fetchone()
    assert found is not None
    call = conn.execute(
        "select url, body, params, headers, timeout_milliseconds from net.calls where id = %s", (found[0],)
    ).fetchone()
    assert call is not None
    url, body, params, headers, timeout = call
    return {"url": url, "body": body, "params": params, "headers": headers, "timeout": timeout}


def test_it_schedules_the_function_with_vault_secrets_and_unschedules_the_direct_job(
    project: psycopg.Connection,
) -> None:
    project.execute("select vault.create_secret('https://abcdefghijklmnopqrst.supabase.co/', 'project_url')")
    project.execute("select vault.create_secret(%s, 'ops_key')", (OPS_KEY,))
    notices = run_snippet(project)
    assert any("agent-ops-heartbeat (the direct SQL schedule) is unscheduled" in n for n in notices)
    scheduled = jobs(project)
    assert "agent-ops-heartbeat" not in scheduled
    assert "agent-ops-cron-cleanup" in scheduled  # the rest of the schedule migration stays
    schedule, command = scheduled[EDGE_JOB]
    assert schedule == "* * * * *"
    # The secrets are read from Vault when the job runs: neither is a literal in cron.job.
    assert OPS_KEY not in command
    assert "abcdefghijklmnopqrst" not in command

    assert run_job(project) == {
        "url": "https://abcdefghijklmnopqrst.supabase.co/functions/v1/ops-heartbeat",
        "body": {},
        "params": {},
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {OPS_KEY}"},
        "timeout": 30000,
    }

    # Running it again changes nothing (cron.schedule upserts by name; the direct job is already gone).
    assert run_snippet(project) == []
    assert jobs(project) == scheduled


def test_without_both_secrets_it_changes_nothing(project: psycopg.Connection) -> None:
    before = jobs(project)
    with pytest.raises(psycopg.errors.RaiseException) as raised:
        run_snippet(project)
    assert "missing Vault secrets" in str(raised.value)
    assert "'project_url'" in str(raised.value)
    assert "'ops_key'" in str(raised.value)

    project.execute("select vault.create_secret('https://abcdefghijklmnopqrst.supabase.co', 'project_url')")
    with pytest.raises(psycopg.errors.RaiseException) as raised:
        run_snippet(project)
    assert "'ops_key'" in str(raised.value)
    assert "'project_url'" not in str(raised.value)
    assert jobs(project) == before


def test_without_vault_it_changes_nothing(project: psycopg.Connection) -> None:
    before = jobs(project)
    project.execute("drop schema vault cascade; create schema vault")
    with pytest.raises(psycopg.errors.RaiseException, match="Vault"):
        run_snippet(project)
    assert jobs(project) == before


def test_the_scheduled_request_runs_the_heartbeat_through_the_function(
    cron_server: LocalPostgres, project: psycopg.Connection
) -> None:
    with (
        running(cron_server.url("postgres")) as standin,
        edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn,
    ):
        # The function's address stands in for https://<ref>.supabase.co; it ignores the path.
        project.execute("select vault.create_secret(%s, 'project_url')", (fn.url,))
        project.execute("select vault.create_secret(%s, 'ops_key')", (OPS_KEY,))
        run_snippet(project)
        request = run_job(project)
        response = httpx.post(
            request["url"], headers=request["headers"], json=request["body"], timeout=request["timeout"] / 1000
        )
        assert response.status_code == 200, response.text
        run_id = response.json()["run_id"]
        assert project.execute("select action, status from ops_action_runs where id = %s", (run_id,)).fetchone() == (
            "heartbeat",
            "succeeded",
        )
        # A key that no longer matches (rotated in one place only) is refused, and nothing runs.
        project.execute("update vault.secrets set secret = 'stale-key' where name = 'ops_key'")
        stale = run_job(project)
        refused = httpx.post(stale["url"], headers=stale["headers"], json=stale["body"], timeout=30)
        assert refused.status_code == 401
        assert standin.calls == ["ops_heartbeat"]
