"""The embedded local PostgreSQL server: one per checkout, for `make run`, the CLI and the tests.

It lives in the project's state folder (`.agent-ops/`), listens on 127.0.0.1 only, keeps its socket
next to its data, preloads pg_cron when the package is installed, and is made to look like a Supabase
project (roles, `extensions` schema) by a local-only bootstrap that never enters `supabase/migrations/`.
Postgres refuses to run as root, so under root every server command runs as the `postgres` system user.
Other users of the machine get nothing: the socket sits in a folder only the server's user (and root) may
enter, TCP needs a password generated at first start (SCRAM, kept mode 600 beside the data, and part of
the URL `agent-ops db url` prints), and pg_hba.conf has no replication entries.
When that user cannot enter the checkout (a clone under /root, or in a mode-700 folder), the data, socket
and log move to a folder of their own under /var/lib/agent-ops, named after a hash of the state folder's
path, so two checkouts never share one; `AGENT_OPS_HOME` is always taken as given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from agent_ops.config import Secret, Settings
from agent_ops.project import state_dir

DEBIAN_PACKAGES = ("postgresql-15", "postgresql-15-cron", "postgresql-15-pgtap", "postgresql-15-plpgsql-check")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "postgres"
DATABASE = "postgres"
PRELOAD_CANDIDATES = ("pg_cron", "pg_stat_statements")
# Where the server's files go when the postgres system user cannot reach the checkout: persistent, unlike
# /var/tmp, which systemd-tmpfiles empties of old files.
EXTERNAL_ROOT = Path("/var/lib/agent-ops")

# Written before every start, so an existing data directory is brought up to it too. Whoever reaches the
# socket folder (mode 700) is the server's own user or root; everyone else must know the password.
PG_HBA = """# agent-ops embedded server: rewritten by agent-ops at every start; no replication entries.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256
"""

# Settings written once into postgresql.conf. Per-start settings (port, socket, preloads) are passed to
# pg_ctl instead, so installing pg_cron later takes effect at the next start without a re-init.
SERVER_CONF = """
# --- agent-ops embedded server ---
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 256MB
timezone = 'UTC'
log_timezone = 'UTC'
# A local development server: a crash may lose the last few commits but never corrupts data.
synchronous_commit = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
"""

Progress = Callable[[str], None]


class PostgresNotInstalledError(RuntimeError):
    """The PostgreSQL server binaries are missing; the message says what to install."""


class LocalPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped; the message says why."""


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    major_version: int
    pkglibdir: Path

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def has_library(self, name: str) -> bool:
        return (self.pkglibdir / f"{name}.so").exists()


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    data_dir: Path
    port: int | None = None
    pid: int | None = None
    password: str | None = field(default=None, repr=False)

    def url(self, dbname: str = DATABASE) -> str:
        if not self.running or self.port is None:
            raise LocalPostgresError("the embedded PostgreSQL server is not running: run `agent-ops db start`")
        if self.password is None:
            raise LocalPostgresError(
                "the embedded server's password file cannot be read: only the user who started it (or root) may connect"
            )
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"


def _candidate_bindirs() -> list[Path]:
    override = os.environ.get("AGENT_OPS_PG_BINDIR")
    if override:
        return [Path(override)]  # an explicit choice is not second-guessed
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            found.append(Path(out.stdout.strip()))

    def version_key(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return int(match.group(1)) if match else 0

    found.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True))
    for tool in SERVER_TOOLS:
        on_path = shutil.which(tool)
        if on_path:
            found.append(Path(on_path).parent)
    return found


def find_binaries() -> Binaries:
    """Locate initdb, pg_ctl and postgres: `pg_config --bindir`, `/usr/lib/postgresql/<ver>/bin`, then PATH."""
    for bindir in _candidate_bindirs():
        if not all(os.access(bindir / tool, os.X_OK) for tool in SERVER_TOOLS):
            continue
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False, timeout=10
        )
        match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
        major = int(match.group(1)) if match else 0
        pkglibdir = bindir.parent / "lib"
        own_pg_config = bindir / "pg_config"
        if own_pg_config.exists():
            libs = subprocess.run(
                [str(own_pg_config), "--pkglibdir"], capture_output=True, text=True, check=False, timeout=10
            )
            if libs.returncode == 0 and libs.stdout.strip():
                pkglibdir = Path(libs.stdout.strip())
        return Binaries(bindir=bindir, major_version=major, pkglibdir=pkglibdir)
    raise PostgresNotInstalledError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found via pg_config, "
        "/usr/lib/postgresql/<version>/bin or PATH. On Debian/Ubuntu install them with:\n"
        f"  apt-get install {' '.join(DEBIAN_PACKAGES)}\n"
        "or point AGENT_OPS_PG_BINDIR at a PostgreSQL bin directory."
    )


def _free_port(preferred: int | None) -> int:
    def bindable(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As Postgres binds: connections of the previous run in TIME_WAIT must not move us to a new port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    if preferred and bindable(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_postgres_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive but owned by the postgres user
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc: trust the liveness check
    return comm.startswith(("postgres", "postmaster"))


def bootstrap_sql() -> str:
    """The local-only SQL that makes a plain Postgres look like a Supabase project to our migrations."""
    return (resources.files("agent_ops") / "sql" / "local_supabase.sql").read_text()


def external_home(home: Path, root: Path = EXTERNAL_ROOT) -> Path:
    """The server's own folder for the state folder `home`: one per path, named so a person can tell whose."""
    owner = home.parent.name if home.name == ".agent-ops" else home.name
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", owner).strip("-.")[:40] or "checkout"
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return root / f"{label}-{digest}"


class LocalPostgres:
    """Controls the embedded server of the state folder `home` (the project's `.agent-ops/`).

    The port file and the start/stop lock stay in `home`; the data, socket and log live in `server_home`,
    which is `home` itself unless the server must run as the postgres user and that user cannot reach it.
    """

    def __init__(
        self, home: Path | None = None, binaries: Binaries | None = None, external_root: Path = EXTERNAL_ROOT
    ) -> None:
        self.home = (home or state_dir()).resolve()
        self._binaries = binaries
        self.as_root = os.geteuid() == 0
        self._external_root = external_root
        self._server_home: Path | None = None

    @property
    def server_home(self) -> Path:
        if self._server_home is None:
            self._server_home = self._locate_server_home()
        return self._server_home

    @property
    def relocated(self) -> bool:
        return self.server_home != self.home

    def _locate_server_home(self) -> Path:
        """Decided without side effects: an existing data folder wins, then whether the server user can reach
        `home`. An explicit AGENT_OPS_HOME is never moved (an unreachable one fails with a clear message)."""
        if not self.as_root:
            return self.home
        override = os.environ.get("AGENT_OPS_HOME")
        if override and Path(override).resolve() == self.home:
            return self.home
        external = external_home(self.home, self._external_root)
        for candidate in (external, self.home):
            if (candidate / "pgdata" / "PG_VERSION").exists():
                return candidate
        return self.home if self._server_user_can_enter(self.home) else external

    def _server_user_can_enter(self, folder: Path) -> bool:
        """Whether the server user can search `folder`, or create it in the nearest folder that exists."""
        target = folder
        while not target.exists() and target != target.parent:
            target = target.parent
        test = "-x" if target == folder else "-w"
        probe = subprocess.run(
            self._as_server_user(["test", "-x", str(target), "-a", test, str(target)]),
            capture_output=True,
            check=False,
            timeout=10,
        )
        return probe.returncode == 0

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = find_binaries()
        return self._binaries

    @property
    def data_dir(self) -> Path:
        return self.server_home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.server_home / "run"

    @property
    def log_file(self) -> Path:
        return self.server_home / "log" / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.server_home / "superuser.password"

    def _password(self) -> str | None:
        try:
            return self.password_file.read_text().strip() or None
        except OSError:
            return None

    @property
    def _port_file(self) -> Path:
        return self.home / "port"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if not self.as_root:
            return argv
        return ["runuser", "-u", SUPERUSER, "--", *argv]

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._as_server_user(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            cwd="/",
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            log_tail = self._log_tail()
            raise LocalPostgresError(
                f"{what} failed (exit {proc.returncode}): {detail}"
                + (f"\n--- server log ---\n{log_tail}" if log_tail else "")
            )
        return proc

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> ServerStatus:
        """Running only when the pid file names a live postgres process; its port comes from that file."""
        try:
            fields = self._pid_file.read_text().splitlines()
            pid, port = int(fields[0]), int(fields[3])
        except (OSError, ValueError, IndexError):
            return ServerStatus(running=False, data_dir=self.data_dir)
        if not _is_postgres_process(pid):
            return ServerStatus(running=False, data_dir=self.data_dir, pid=pid)
        return ServerStatus(running=True, data_dir=self.data_dir, port=port, pid=pid, password=self._password())

    def url(self, dbname: str = DATABASE) -> str:
        return self.status().url(dbname)

    def _ensure_reachable_dirs(self, progress: Progress) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.relocated:
            if not self.server_home.exists():
                progress(
                    f"the '{SUPERUSER}' system user cannot enter {self.home}; the embedded server keeps its data, "
                    f"socket and log in {self.server_home} (set AGENT_OPS_HOME to choose another folder)"
                )
            self._external_root.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.server_home.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(self.server_home, user=SUPERUSER, group=SUPERUSER)
            self.server_home.chmod(0o700)
        for directory in (self.data_dir, self.socket_dir, self.log_file.parent):
            directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            for directory in (self.data_dir, self.socket_dir, self.log_file.parent):
                shutil.chown(directory, user=SUPERUSER, group=SUPERUSER)
        self.data_dir.chmod(0o700)
        self.socket_dir.chmod(0o700)
        if not self.as_root:
            return
        probe = subprocess.run(
            self._as_server_user(["test", "-w", str(self.data_dir)]), capture_output=True, check=False
        )
        if probe.returncode != 0:
            raise LocalPostgresError(
                f"the '{SUPERUSER}' system user cannot reach {self.data_dir} (a parent folder is not searchable "
                "by it). Set AGENT_OPS_HOME to a folder it can reach, e.g. AGENT_OPS_HOME=/var/tmp/agent-ops."
            )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, progress: Progress = lambda _m: None) -> None:
        self._ensure_reachable_dirs(progress)
        if self.initialized():
            return
        progress(f"initialising PostgreSQL {self.binaries.major_version} data directory in {self.data_dir}")
        self._run(
            [
                self.binaries.tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            "initdb",
        )
        conf = self.data_dir / "postgresql.conf"
        # Append as the server user: the file belongs to it and must stay that way.
        with conf.open("a") as handle:
            handle.write(SERVER_CONF)

    def _secure(self) -> None:
        """The password file (created once) and pg_hba.conf, both owned by the server user, mode 600."""
        if self._password() is None:
            self._write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        self._write_private(self.data_dir / "pg_hba.conf", PG_HBA)

    def _write_private(self, path: Path, content: str) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        path.chmod(0o600)
        if self.as_root:
            shutil.chown(path, user=SUPERUSER, group=SUPERUSER)

    def _start_options(self, port: int) -> str:
        options = [f"-p {port}", f"-k {self.socket_dir}", "-c unix_socket_permissions=0700"]
        preload = [lib for lib in PRELOAD_CANDIDATES if self.binaries.has_library(lib)]
        if preload:
            options.append(f"-c shared_preload_libraries={','.join(preload)}")
        if "pg_cron" in preload:
            options.append(f"-c cron.database_name={DATABASE}")
        return " ".join(options)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One start or stop at a time per state folder (parallel test workers, two terminals)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, progress: Progress = lambda _m: None) -> ServerStatus:
        """Start the server if it is not running (a second start is a no-op) and apply the local bootstrap."""
        with self._exclusive():
            current = self.status()
            if current.running and not self.password_file.exists():
                # Started by a version that left TCP open to every local user: restart it secured.
                progress("restarting the embedded server to require its password on TCP")
                self._stop()
                return self._start(progress)
            if current.running:
                return current
            return self._start(progress)

    def _start(self, progress: Progress) -> ServerStatus:
        _ = self.binaries  # fail on missing PostgreSQL before touching any folder
        self.init(progress)
        self._secure()
        if self._pid_file.exists():
            progress(f"removing stale pid file {self._pid_file}")
            self._pid_file.unlink(missing_ok=True)
        preferred = None
        with contextlib.suppress(OSError, ValueError):
            preferred = int(self._port_file.read_text())
        port = _free_port(preferred)
        progress(f"starting PostgreSQL {self.binaries.major_version} on 127.0.0.1:{port}")
        self._run(
            [
                self.binaries.tool("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                self._start_options(port),
                "start",
            ],
            "pg_ctl start",
        )
        self._port_file.write_text(str(port))
        status = self.status()
        if not status.running:
            raise LocalPostgresError(f"PostgreSQL did not come up.\n--- server log ---\n{self._log_tail()}")
        self.bootstrap(status)
        return status

    def bootstrap(self, status: ServerStatus) -> None:
        """Set the superuser's password, then apply the Supabase look-alike bootstrap to `postgres` and
        `template1`, so new databases get it too. Through the socket: TCP needs the password being set."""
        bootstrap = bootstrap_sql()
        password = self._password()
        if password is None:
            raise LocalPostgresError(f"cannot read the server's password file {self.password_file}")
        for dbname in (DATABASE, "template1"):
            with psycopg.connect(
                host=str(self.socket_dir), port=status.port, user=SUPERUSER, dbname=dbname, autocommit=True
            ) as conn:
                conn.execute(bootstrap.encode())
                if dbname == DATABASE:
                    # authenticator (PostgREST's login role, which the tests' stand-in uses) shares it.
                    for role in (SUPERUSER, "authenticator"):
                        conn.execute(
                            sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(password))
                        )

    def stop(self, progress: Progress = lambda _m: None) -> bool:
        """Stop the server (fast shutdown: open sessions are disconnected). False when it was not running."""
        with self._exclusive():
            if not self.status().running:
                return False
            progress("stopping PostgreSQL")
            self._stop()
            return True

    def _stop(self) -> None:
        self._run([self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop")

    def restart(self, progress: Progress = lambda _m: None) -> ServerStatus:
        self.stop(progress)
        return self.start(progress)

    def destroy(self, progress: Progress = lambda _m: None) -> list[Path]:
        """Stop the server and delete its data, socket and log folders (and a relocated server's own folder).

        The state folder itself (port file, console key) is left for the caller. Returns what was removed.
        """
        self.stop(progress)
        with self._exclusive():
            owned = [self.data_dir, self.socket_dir, self.log_file.parent]
            targets = [self.server_home] if self.relocated else owned
            removed = [path for path in targets if path.exists()]
            for path in removed:
                progress(f"removing {path}")
                shutil.rmtree(path)
            self._port_file.unlink(missing_ok=True)
            return removed


def with_local_fallback(settings: Settings) -> Settings:
    """Settings that name no database get the running embedded server (local development)."""
    if settings.database_url is not None or settings.supabase_url is not None:
        return settings
    try:
        status = LocalPostgres().status()
    except (LocalPostgresError, PostgresNotInstalledError):
        return settings
    if not status.running:
        return settings
    return dataclasses.replace(settings, database_url=Secret(status.url()))
