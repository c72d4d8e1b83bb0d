"""A stand-in for PostgREST's RPC endpoint — test infrastructure only, never shipped.

Real PostgREST cannot be installed on the build machines, so the PostgREST transport (supabase-py) is tested
against this server, which follows the documented RPC contract agent_ops relies on:

- `POST /rest/v1/rpc/<fn>` with a JSON object body; the keys must equal the function's required parameters
  plus any of its defaulted ones, else PGRST202 (404) "Could not find the function ... in the schema cache";
- the JWT (HS256, a local secret) in `Authorization: Bearer` (or the `apikey` header) selects the role from
  its `role` claim: `SET LOCAL ROLE` plus `request.jwt.claims`; no token runs as `anon`; a bad token is
  PGRST301 (401);
- one transaction per request, connected as `authenticator` (with Supabase's 8 s statement timeout);
- SQLSTATE → HTTP status as PostgREST's mapSQLtoHTTP does (P0001 → 400, PTxxx → xxx, 42501 → 401 for anon and
  403 otherwise, 23505 → 409, ...); error body `{code, message, details, hint}` with a `Proxy-Status` header;
- 204 for void functions;
- a json or jsonb result sent as the database wrote it, never decoded and encoded again (so any depth the
  database holds reaches the client, as from PostgREST).

It also injects one fault for the retry tests: `drop_response_once(fn)` commits the call and then closes
the connection without answering, as a network failure after commit would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import make_conninfo

JWT_SECRET = "agent-ops-standin-jwt-secret-at-least-32-bytes"


def make_key(role: str) -> str:
    """A legacy-style Supabase API key: an HS256 JWT whose role claim picks the database role."""
    return jwt.encode({"role": role, "iss": "supabase-standin"}, JWT_SECRET, algorithm="HS256")


def http_status(code: str, message: str, authed: bool) -> int:
    """PostgREST's mapSQLtoHTTP (src/PostgREST/Error.hs)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42P01": 404,
        "42P17": 500,
    }
    if code in exact:
        return exact[code]
    if code == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if code == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if code == "42883":
        return 404
    if code == "42501":
        return 403 if authed else 401
    if code.startswith("PT"):
        return int(code[2:]) if code[2:].isdigit() else 500
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
        "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
        "P0": 500, "XX": 500,
    }  # fmt: skip
    return prefixes.get(code[:2], 400)


class RawJson:
    """json/jsonb exactly as Postgres wrote it."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class RawJsonLoader(Loader):
    def load(self, data: Buffer) -> RawJson:
        return RawJson(bytes(data))


def _raw_json(conn: psycopg.Connection) -> None:
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, RawJsonLoader)


@dataclass(frozen=True)
class Routine:
    name: str
    params: list[tuple[str, str]]  # (name, type) in order
    required: int
    returns_void: bool


class StandIn:
    """The server. Use `running(db_url)` to get one for the length of a test."""

    def __init__(self, db_url: str) -> None:
        self._owner_url = db_url
        # PostgREST's login role; the embedded server gives it the superuser's password.
        authenticator_url = make_conninfo(db_url, user="authenticator")
        self._pool = psycopg_pool.ConnectionPool(
            authenticator_url,
            min_size=1,
            max_size=32,
            kwargs={"autocommit": False},
            configure=_raw_json,
            open=True,
            name="standin",
        )
        self._drop_once: set[str] = set()
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="postgrest-standin", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def drop_response_once(self, function: str) -> None:
        with self._lock:
            self._drop_once.add(function)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    def _routines(self, name: str) -> list[Routine]:
        with psycopg.connect(self._owner_url) as conn:
            rows = conn.execute(
                """
                select p.proargnames, array(select format_type(t, null) from unnest(p.proargtypes) t),
                       p.pronargs - p.pronargdefaults, p.prorettype = 'void'::regtype
                  from pg_proc p
                 where p.pronamespace = 'public'::regnamespace and p.proname = %s
                """,
                (name,),
            ).fetchall()
        routines = []
        for argnames, argtypes, required, returns_void in rows:
            if argtypes and not argnames:
                continue  # unnamed parameters are not in the schema cache
            routines.append(Routine(name, list(zip(argnames or [], argtypes, strict=False)), required, returns_void))
        return routines

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                payload = b"" if body is None else body.data if isinstance(body, RawJson) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, status: int, code: str, message: str, details: Any = None, hint: Any = None) -> None:
                headers = {"Proxy-Status": f"PostgREST; error={code}"}
                if status == 401:
                    headers["WWW-Authenticate"] = "Bearer"
                self._send(status, {"code": code, "message": message, "details": details, "hint": hint}, headers)

            def do_GET(self) -> None:
                self._error(405, "PGRST101", "Cannot use the GET method on RPC in this stand-in")

            def do_POST(self) -> None:
                prefix = "/rest/v1/rpc/"
                if not self.path.startswith(prefix):
                    self._error(404, "PGRST125", "Invalid path specified in request URL")
                    return
                name = self.path[len(prefix) :].split("?", 1)[0]
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
                token = token or (self.headers.get("apikey") or "").strip()
                claims: dict[str, Any] = {"role": "anon"}
                if token:
                    try:
                        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
                    except jwt.PyJWTError:
                        self._error(401, "PGRST301", "JWT cryptographic operation failed")
                        return
                role = str(claims.get("role") or "anon")
                authed = role != "anon"
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._error(400, "PGRST102", "Empty or invalid json")
                    return
                if not isinstance(body, dict):
                    self._error(400, "PGRST102", "Empty or invalid json")
                    return
                keys = set(body)
                matches = [
                    r
                    for r in standin._routines(name)
                    if {p for p, _ in r.params[: r.required]} <= keys <= {p for p, _ in r.params}
                ]
                if not matches:
                    listed = ", ".join(sorted(keys))
                    self._error(
                        404,
                        "PGRST202",
                        f"Could not find the function public.{name}({listed}) in the schema cache",
                        f"Searched for the function public.{name} with parameters {listed}, "
                        "but no matches were found in the schema cache.",
                    )
                    return
                if len(matches) > 1:
                    self._error(300, "PGRST203", f"Could not choose the best candidate function for public.{name}")
                    return
                routine = matches[0]
                standin.calls.append(name)
                self._run(routine, body, role, claims, authed)

            def _run(
                self, routine: Routine, body: dict[str, Any], role: str, claims: dict[str, Any], authed: bool
            ) -> None:
                used = [(p, t) for p, t in routine.params if p in body]
                # Like PostgREST: the JSON body becomes a typed record whose fields are the named arguments.
                call = sql.SQL("select public.{}({}) from json_to_record(%s::json) as r({})").format(
                    sql.Identifier(routine.name),
                    sql.SQL(", ").join(
                        sql.SQL("{} => r.{}").format(sql.Identifier(p), sql.Identifier(p)) for p, _ in used
                    ),
                    sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(p), sql.SQL(t)) for p, t in used),
                )
                if not used:
                    call = sql.SQL("select public.{}()").format(sql.Identifier(routine.name))
                try:
                    with standin._pool.connection() as conn, conn.transaction():
                        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                        conn.execute(
                            "select set_config('request.jwt.claims', %s, true),"
                            " set_config('request.method', 'POST', true), set_config('request.path', %s, true)",
                            (json.dumps(claims), f"/rpc/{routine.name}"),
                        )
                        row = conn.execute(call, (json.dumps(body),) if used else ()).fetchone()
                except psycopg.Error as error:
                    code = error.sqlstate or "PGRST000"
                    message = error.diag.message_primary or str(error)
                    self._error(
                        http_status(code, message, authed),
                        code,
                        message,
                        error.diag.message_detail,
                        error.diag.message_hint,
                    )
                    return
                with standin._lock:
                    drop = routine.name in standin._drop_once
                    standin._drop_once.discard(routine.name)
                if drop:
                    # Committed, but the answer never arrives.
                    self.close_connection = True
                    return
                if routine.returns_void:
                    self._send(HTTPStatus.NO_CONTENT)
                else:
                    self._send(200, row[0] if row else None)

        return Handler


@contextmanager
def running(db_url: str) -> Iterator[StandIn]:
    server = StandIn(db_url)
    try:
        yield server
    finally:
        server.close()
