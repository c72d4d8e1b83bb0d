"""The ops-heartbeat Edge Function (supabase/functions/ops-heartbeat) over real HTTP, run by the pinned Deno.

The function runs as Supabase runs it, a `Deno.serve` module, with the Edge runtime's settings
(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY) pointing at the PostgREST stand-in over this test's database, and
the real supabase-js from npm (deno.lock, frozen). Deno comes from package.json (`make setup`); without it
these tests fail rather than skip. `make test` also runs `deno check`, `deno lint` and `deno fmt --check`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests.kit.children import environment, wait_until
from tests.kit.database import ROOT
from tests.postgrest_standin import StandIn, make_key, running

DENO = ROOT / "node_modules" / ".bin" / "deno"
FUNCTION = ROOT / "supabase" / "functions" / "ops-heartbeat"
# The Makefile exports the same DENO_DIR: the npm imports are fetched once into the checkout.
DENO_DIR = os.environ.get("DENO_DIR") or str(ROOT / ".deno")
OPS_KEY = "ops-key-for-edge-tests-only-5f1c"
SERVICE_KEY = make_key("service_role")
SECRETS = (OPS_KEY, SERVICE_KEY)
LISTENING = re.compile(r"Listening on (http://127\.0\.0\.1:\d+)/")


@dataclass
class EdgeFunction:
    """A running function: its base URL and what it has printed so far."""

    process: subprocess.Popen[str]
    url: str = ""
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout]

    def wait_for_logs(self, count: int) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.stdout) >= count, 10, f"{count} log line(s)")
        return self.logs()

    def request(self, method: str = "POST", key: str | None = OPS_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.request(method, f"{self.url}/ops-heartbeat", headers=headers, timeout=60, **kwargs)


def _collect(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


@contextmanager
def edge_function(**settings: str) -> Iterator[EdgeFunction]:
    """The function under `deno run` on a free port, with only `settings` as its environment's Supabase part.

    Permissions are narrower than on Supabase: the network only on 127.0.0.1 and only the three variables
    the function reads, so it provably needs nothing else.
    """
    if not DENO.exists():
        pytest.fail("Deno is not installed: run `make setup` (npm install --no-save installs the pinned deno)")
    process = subprocess.Popen(
        [
            str(DENO),
            "run",
            "--frozen",
            "--allow-net=127.0.0.1",
            "--allow-env=OPS_KEY,SUPABASE_URL,SUPABASE_SERVICE_ROLE_KEY",
            "--config",
            str(FUNCTION / "deno.json"),
            str(FUNCTION / "index.ts"),
        ],
        env=environment(
            DENO_DIR=DENO_DIR,
            DENO_SERVE_ADDRESS="tcp:127.0.0.1:0",
            DENO_NO_UPDATE_CHECK="1",
            DENO_NO_PROMPT="1",
            NO_COLOR="1",
            **settings,
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    function = EdgeFunction(process)
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, function.stdout), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, function.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"deno exited with {process.returncode}: " + "\n".join(function.stderr))
            found = next((m for m in map(LISTENING.search, function.stderr) if m), None)
            if found:
                function.url = found.group(1)
            return found is not None

        # The first run in a fresh checkout downloads supabase-js from npm into DENO_DIR.
        wait_until(listening, 120, "the Edge Function listening")
        yield function
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for reader in readers:
            reader.join(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        printed = "\n".join(function.stdout + function.stderr)
        for secret in SECRETS:
            assert secret not in printed, "a key reached the function's output"


def runs(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute("select id, action, status from ops_action_runs order by id").fetchall()
    ]


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_key_runs_the_heartbeat_and_returns_its_json(standin: StandIn, conn: psycopg.Connection) -> None:
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        bodies = []
        for method in ("POST", "GET"):
            response = fn.request(method)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/json")
            assert response.headers["cache-control"] == "no-store"
            bodies.append(response.json())
        logs = fn.wait_for_logs(2)
    # The heartbeat's own JSON, as ops_heartbeat() returned it through PostgREST as service_role.
    assert [b["ok"] for b in bodies] == [True, True]
    assert {"recovery", "triggers", "retention", "errors", "duration_ms"} <= set(bodies[0])
    assert runs(conn) == [
        (bodies[0]["run_id"], "heartbeat", "succeeded"),
        (bodies[1]["run_id"], "heartbeat", "succeeded"),
    ]
    assert standin.calls == ["ops_heartbeat", "ops_heartbeat"]
    assert [(log["function"], log["method"], log["status"], log["run_id"]) for log in logs] == [
        ("ops-heartbeat", "POST", 200, bodies[0]["run_id"]),
        ("ops-heartbeat", "GET", 200, bodies[1]["run_id"]),
    ]


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "no key"),
        ("Bearer", "no key"),
        ("Basic b3BzOmtleQ==", "no key"),
        (OPS_KEY, "no key"),  # the key without its scheme
        ("Bearer wrong", "wrong key"),
        (f"Bearer {OPS_KEY}x", "wrong key"),
        (f"Bearer {OPS_KEY[:-1]}", "wrong key"),
    ],
    ids=["none", "empty", "basic", "no-scheme", "wrong", "longer", "prefix"],
)
def test_a_missing_or_wrong_key_is_401_and_never_calls_the_database(
    standin: StandIn, conn: psycopg.Connection, authorization: str | None, reason: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        answers = [httpx.request(m, f"{fn.url}/ops-heartbeat", headers=headers, timeout=30) for m in ("POST", "GET")]
        logs = fn.wait_for_logs(2)
    for response in answers:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "unauthorized"}
    assert standin.calls == []
    assert runs(conn) == []
    assert [(log["status"], log["reason"]) for log in logs] == [(401, reason), (401, reason)]


def test_without_ops_key_it_answers_503_and_never_runs(standin: StandIn, conn: psycopg.Connection) -> None:
    with edge_function(SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        for key in (None, "anything", OPS_KEY):
            response = fn.request("POST", key=key)
            assert response.status_code == 503
            assert response.json() == {"error": "OPS_KEY is not set: the heartbeat endpoint stays closed"}
        assert [log["status"] for log in fn.wait_for_logs(3)] == [503, 503, 503]
    assert standin.calls == []
    assert runs(conn) == []


def test_while_another_driver_runs_the_heartbeat_it_answers_skipped(standin: StandIn, conn: psycopg.Connection) -> None:
    # pg_cron's direct job (or any other driver) holding the heartbeat: single-flight, so both may be scheduled.
    conn.execute("select pg_advisory_lock(hashtextextended('agent-ops:heartbeat', 0))")
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        response = fn.request()
        (log,) = fn.wait_for_logs(1)
    assert (response.status_code, response.json()) == (200, {"skipped": "busy"})
    assert (log["status"], log["skipped"], log["run_id"]) == (200, "busy", None)
    assert runs(conn) == []


def test_without_the_runtime_settings_it_answers_503(conn: psycopg.Connection) -> None:
    with edge_function(OPS_KEY=OPS_KEY) as fn:
        response = fn.request()
        wrong = fn.request(key="wrong")
    assert response.status_code == 503
    assert response.json() == {"error": "SUPABASE_URL or SUPABASE_SERVICE_ROLE_KEY is not set"}
    assert wrong.status_code == 401  # the key is checked first: nothing about the setup is told to a stranger


def test_other_methods_are_405(standin: StandIn) -> None:
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        for method in ("PUT", "DELETE", "PATCH"):
            response = fn.request(method)
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, POST"
    assert standin.calls == []


def test_database_down_is_502_with_no_secret(db_url: str, conn: psycopg.Connection) -> None:
    with running(db_url) as standin:
        settings = {"OPS_KEY": OPS_KEY, "SUPABASE_URL": standin.url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY}
        with edge_function(**settings) as fn:
            assert fn.request().status_code == 200
            # PostgREST's database is gone: a kept-alive connection gets PostgREST's 503 PGRST000, a new one
            # is refused; either way the function answers 502.
            standin.close()
            down = [fn.request(), fn.request("GET")]
            logs = fn.wait_for_logs(3)
    for response in down:
        assert response.status_code == 502
        assert response.json()["error"] == "the heartbeat call failed"
        assert response.json()["code"] in (None, "PGRST000")
        for secret in SECRETS:
            assert secret not in response.text
    for secret in SECRETS:
        assert secret not in json.dumps(logs)
    assert [log["status"] for log in logs] == [200, 502, 502]
    assert all(log["reason"] for log in logs[1:])  # why, for the operator, in the log line only
    assert len(runs(conn)) == 1


def test_an_unreachable_supabase_url_is_502(conn: psycopg.Connection) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        response = fn.request()
        (log,) = fn.wait_for_logs(1)
    assert response.status_code == 502
    assert response.json() == {"error": "the heartbeat call failed", "code": None}
    assert "127.0.0.1" not in response.text  # where the database is stays in the log
    assert (log["status"], log["upstream_status"]) == (502, 0)
    assert "Connection refused" in log["reason"]  # the cause supabase-js reports, for the operator


def test_a_database_error_is_502_with_its_code_only(standin: StandIn, conn: psycopg.Connection) -> None:
    # PostgREST answers 403 (42501) when the role may not run the function: the wrong key for the runtime.
    conn.execute("revoke execute on function public.ops_heartbeat() from service_role")
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY) as fn:
        denied = fn.request()
        (log,) = fn.wait_for_logs(1)
    assert denied.status_code == 502
    assert denied.json() == {"error": "the heartbeat call failed", "code": "42501"}
    assert (log["status"], log["code"]) == (502, "42501")
    assert "ops_heartbeat" in log["reason"]  # PostgREST's message, for the operator
    assert runs(conn) == []


def test_a_key_postgrest_rejects_is_502_and_never_shown(standin: StandIn) -> None:
    forged = make_key("service_role")[:-4] + "AAAA"  # a bad signature: PostgREST's PGRST301
    with edge_function(OPS_KEY=OPS_KEY, SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=forged) as fn:
        response = fn.request()
        (log,) = fn.wait_for_logs(1)
    assert response.status_code == 502
    assert response.json() == {"error": "the heartbeat call failed", "code": "PGRST301"}
    assert forged not in response.text
    assert forged not in json.dumps(log)


def test_config_toml_declares_the_function_without_the_gateway_jwt_check() -> None:
    config = tomllib.loads((ROOT / "supabase" / "config.toml").read_text())
    declared = config["functions"]["ops-heartbeat"]
    assert declared["verify_jwt"] is False  # the function checks OPS_KEY itself; cron sends no Supabase JWT
    assert (ROOT / "supabase" / declared["entrypoint"]).resolve() == FUNCTION / "index.ts"
    assert (ROOT / "supabase" / declared["import_map"]).resolve() == FUNCTION / "deno.json"
    imports = json.loads((FUNCTION / "deno.json").read_text())["imports"]
    assert re.fullmatch(r"npm:@supabase/supabase-js@\d+\.\d+\.\d+", imports["@supabase/supabase-js"])


def test_deno_is_the_pinned_npm_package() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["deno"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)  # exact, like the Supabase CLI
    version = subprocess.run([str(DENO), "--version"], capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.startswith(f"deno {pinned} ")
