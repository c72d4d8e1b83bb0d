"""The embedded server: start/stop/status/url, idempotent start, stale pid files, root and non-root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent_ops.localpg import LocalPostgres, external_home
from tests.kit.children import agent_ops, environment
from tests.kit.database import ROOT

AGENT_OPS = str(ROOT / ".venv" / "bin" / "agent-ops") if (ROOT / ".venv").exists() else "agent-ops"


@pytest.fixture(scope="module")
def scratch_home() -> Iterator[Path]:
    """A second, throw-away server home inside the project (the postgres user can reach it)."""
    home = ROOT / ".agent-ops" / "scratch" / uuid.uuid4().hex[:8]
    home.mkdir(parents=True)
    yield home
    LocalPostgres(home).destroy()
    shutil.rmtree(home, ignore_errors=True)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `agent-ops` script, outside the checkout."""
    return agent_ops(*args, env={**os.environ, **(env or {})}, cwd=Path("/"), program=[AGENT_OPS])


def test_start_is_idempotent_and_status_url_stop_behave(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    first = server.start()
    second = server.start()
    assert first.running
    assert (second.pid, second.port) == (first.pid, first.port)
    with psycopg.connect(server.url()) as conn:
        roles = {
            r[0]
            for r in conn.execute(
                "select rolname from pg_roles where rolname in ('anon','authenticated','service_role','authenticator')"
            )
        }
        bypass = conn.execute("select rolbypassrls from pg_roles where rolname = 'service_role'").fetchone()
        extensions = conn.execute("select count(*) from pg_namespace where nspname = 'extensions'").fetchone()
    assert roles == {"anon", "authenticated", "service_role", "authenticator"}
    assert bypass == (True,)
    assert extensions == (1,)
    assert server.stop() is True
    assert server.status().running is False
    assert server.stop() is False


def test_start_recovers_from_a_stale_pid_file(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    server.start()
    server.stop()
    # A pid file left by a crash, naming a live process that is not postgres (this test runner).
    pid_file = server.data_dir / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{server.data_dir}\n0\n5999\n/tmp\n127.0.0.1\n0 0\nready\n")
    assert server.status().running is False
    status = server.start()
    assert status.running
    assert status.pid != os.getpid()
    with psycopg.connect(server.url()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only behaviour")
def test_as_root_the_data_belongs_to_the_postgres_user(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    server.start()
    owner = server.data_dir.stat().st_uid
    assert owner == pwd.getpwnam("postgres").pw_uid


@pytest.fixture
def reachable_copy() -> Iterator[Path]:
    """Our code and the venv's packages where an ordinary user can read them, even when the checkout is in
    a folder only root may enter (a clone under /root): hard links, so nothing is copied."""
    folder = Path(tempfile.mkdtemp(prefix="agent-ops-user-", dir="/var/tmp"))
    folder.chmod(0o755)
    site_packages = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    for source, name in ((ROOT / "agent_ops", "agent_ops"), (site_packages, "site-packages")):
        subprocess.run(["cp", "-al", str(source), str(folder / name)], check=True, timeout=120)
    home = folder / "home"
    home.mkdir()
    shutil.chown(home, "postgres", "postgres")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_ordinary_user(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as the unprivileged `postgres` user through the system Python (the venv's interpreter
    may sit under /root, which that user cannot reach)."""
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", SYSTEM_PYTHON, "-m", "agent_ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AGENT_OPS_HOME": str(copy / "home"), "PYTHONPATH": f"{copy}:{copy / 'site-packages'}"},
        cwd="/",
    )


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as an ordinary user")
@pytest.mark.skipif(
    not Path(SYSTEM_PYTHON).exists() or not (ROOT / ".venv").exists(), reason="needs the system python3 and .venv"
)
def test_an_ordinary_user_runs_it_without_runuser(reachable_copy: Path) -> None:
    try:
        started = as_ordinary_user(reachable_copy, "db", "start")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().startswith("postgresql://postgres:")
        status = as_ordinary_user(reachable_copy, "db", "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"running": true' in status.stdout
        assert (reachable_copy / "home" / "pgdata").stat().st_uid == pwd.getpwnam("postgres").pw_uid
    finally:
        stopped = as_ordinary_user(reachable_copy, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr


def test_missing_binaries_give_one_clear_message_not_a_traceback(tmp_path: Path) -> None:
    result = cli("db", "start", env={"AGENT_OPS_PG_BINDIR": str(tmp_path), "AGENT_OPS_HOME": str(tmp_path / "h")})
    assert result.returncode == 2
    assert "apt-get install postgresql-15 postgresql-15-cron postgresql-15-pgtap postgresql-15-plpgsql-check" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_status_and_url_report_a_stopped_server_with_exit_3(tmp_path: Path) -> None:
    env = {"AGENT_OPS_HOME": str(tmp_path / "never-started")}
    status = cli("db", "status", env=env)
    url = cli("db", "url", env=env)
    assert (status.returncode, url.returncode) == (3, 3)
    assert status.stdout.startswith("stopped")
    assert "agent-ops db start" in url.stderr


def test_the_project_server_url_is_printed_for_scripts() -> None:
    url = subprocess.run(
        [AGENT_OPS, "db", "url"], capture_output=True, text=True, timeout=60, check=False, env=environment(), cwd=ROOT
    )
    assert url.returncode == 0
    with psycopg.connect(url.stdout.strip()) as conn:
        assert conn.execute("show cron.database_name").fetchone() == ("postgres",)


def test_a_restart_keeps_the_port_even_with_connections_in_time_wait(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    before = server.start()
    for _ in range(3):  # client connections closed by the server side leave TIME_WAIT entries behind
        with psycopg.connect(server.url()) as conn:
            conn.execute("select 1")
    after = server.restart()
    assert after.port == before.port


def in_checkout(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return agent_ops(*args, env=environment(), cwd=checkout, timeout=180)


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only: the server runs as the postgres user")
def test_a_checkout_the_postgres_user_cannot_enter_keeps_its_server_in_a_folder_it_can(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)  # as a clone under /root, or in a `mktemp -d` folder
    checkout = private / "checkout"
    shutil.copytree(ROOT / "supabase" / "migrations", checkout / "supabase" / "migrations")
    server = LocalPostgres(checkout / ".agent-ops")
    expected = external_home(checkout / ".agent-ops")
    try:
        started = in_checkout(checkout, "db", "start")
        assert started.returncode == 0, started.stderr
        assert f"socket and log in {expected}" in started.stderr, "says once where the data went"
        assert in_checkout(checkout, "db", "start").stderr.count(str(expected)) == 0

        status = json.loads(in_checkout(checkout, "db", "status", "--json").stdout)
        assert status["running"] is True
        assert status["data_dir"] == str(expected / "pgdata")
        info = expected.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (pwd.getpwnam("postgres").pw_uid, 0o700)

        migrated = in_checkout(checkout, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        beat = in_checkout(checkout, "heartbeat")
        assert beat.returncode == 0, beat.stderr
        rpc = in_checkout(checkout, "status", "--json")  # exits 5 until a heartbeat has run
        assert rpc.returncode == 0, rpc.stderr
        assert json.loads(rpc.stdout)["system_enabled"] is True

        # make stop finds it again; two checkouts never share a folder.
        assert in_checkout(checkout, "db", "stop").returncode == 0
        assert server.status().running is False
        assert external_home(private / "other" / ".agent-ops") != expected
    finally:
        destroyed = in_checkout(checkout, "db", "destroy", "--yes")
        server.destroy()
    assert destroyed.returncode == 0, destroyed.stderr
    assert not expected.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only: the server runs as the postgres user")
def test_an_explicit_agent_ops_home_is_never_moved(tmp_path: Path) -> None:
    private = tmp_path / "private-home"
    private.mkdir(mode=0o700)
    result = subprocess.run(
        [sys.executable, "-m", "agent_ops", "db", "start"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment(AGENT_OPS_HOME=str(private)),
        cwd="/",
    )
    assert result.returncode == 1
    assert "cannot reach" in result.stderr
    assert "AGENT_OPS_HOME" in result.stderr
    assert not external_home(private).exists()


def psql_as(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "psql", "-w", "-X", "-At", *args, "-c", "select current_user"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=environment(PGCONNECT_TIMEOUT="5"),
        cwd="/",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_os_user_cannot_connect_and_the_tools_still_can(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    status = server.start()
    # The tools: the URL carries the password, and psql and psycopg connect with it.
    url = status.url()
    assert url.startswith("postgresql://postgres:")
    assert "@127.0.0.1:" in url
    with psycopg.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    assert (
        subprocess.run(["psql", url, "-AtXc", "select 1"], capture_output=True, text=True, check=False).stdout == "1\n"
    )
    # Anyone else: TCP wants the password, the socket folder is closed, nothing to read it from.
    tcp = psql_as("nobody", "-h", "127.0.0.1", "-p", str(status.port), "-U", "postgres", "-d", "postgres")
    assert tcp.returncode != 0
    assert "no password supplied" in tcp.stderr
    socket_dir = psql_as("nobody", "-h", str(server.socket_dir), "-p", str(status.port), "-U", "postgres")
    assert socket_dir.returncode != 0
    assert "Permission denied" in socket_dir.stderr
    assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    hba = [line.split() for line in (server.data_dir / "pg_hba.conf").read_text().splitlines()]
    entries = [fields for fields in hba if fields and not fields[0].startswith("#")]
    assert entries == [["local", "all", "all", "trust"], ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]]
    wrong = url.replace(url.split(":")[2].split("@")[0], "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()


def test_a_server_started_before_passwords_is_restarted_secured(scratch_home: Path) -> None:
    server = LocalPostgres(scratch_home)
    server.start()
    # As a server started by an earlier version: trust on TCP, no password file.
    server.password_file.unlink()
    (server.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    notes: list[str] = []
    status = LocalPostgres(scratch_home).start(progress=notes.append)
    assert any("restarting" in note for note in notes)
    assert server.password_file.exists()
    with psycopg.connect(status.url()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    bare = f"postgresql://postgres@127.0.0.1:{status.port}/postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bare, connect_timeout=5).close()
