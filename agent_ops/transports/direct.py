"""The direct transport: psycopg 3 with a psycopg_pool pool, calling the functions with named arguments.

The local default, and an option for workers: one round trip per call and LISTEN/NOTIFY wake-ups.
json and jsonb results are decoded by `agent_ops.jsonsafe`, so a row nested too deeply for Python comes
back cut at `jsonsafe.MAX_DEPTH` instead of raising RecursionError.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.adapt import AdaptersMap
from psycopg.types.json import Jsonb, set_json_loads

from agent_ops import jsonsafe
from agent_ops.config import Settings
from agent_ops.errors import InvalidInput, OpsError, TransportError, error_class
from agent_ops.transports import Poll

RECONNECT_SECONDS = 3.0  # at least; see the pool's reconnect_timeout below
# Parameters of the ops_* functions that are jsonb (every other one maps naturally).
JSONB_PARAMS = frozenset({"proposal", "output", "event", "value", "worker", "rule", "usage", "reports"})


def _adapters() -> AdaptersMap:
    """psycopg's adapters with json/jsonb decoded by jsonsafe (only on agent_ops' own connections)."""
    adapters = AdaptersMap(psycopg.adapters)
    set_json_loads(jsonsafe.loads, adapters)
    return adapters


ADAPTERS = _adapters()


def from_psycopg(error: psycopg.Error, function: str) -> OpsError:
    code = error.sqlstate
    if code is None:
        if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            # The connection broke or never opened; the call may or may not have run.
            return TransportError(f"{function}: lost the database connection ({type(error).__name__})")
        # Refused on this side before sending (e.g. a NUL character in text): retrying cannot help.
        return InvalidInput(f"{function}: {error}")
    diag = error.diag
    cls = error_class(code)
    return cls(diag.message_primary or str(error), code=code, detail=diag.message_detail, hint=diag.message_hint)


class DirectTransport:
    name = "direct"
    supports_listen = True

    def __init__(self, settings: Settings) -> None:
        if settings.database_url is None:
            raise ValueError("DirectTransport needs DATABASE_URL (use Settings.validated())")
        self._statement_timeout_ms = int(settings.timeout * 1000)
        self._bytes: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._conninfo = settings.database_url.reveal()
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(settings.connect_timeout)),
            "application_name": "agent-ops",
            # Server-side prepared statements break behind a transaction pooler (Supavisor :6543).
            "prepare_threshold": None,
            "context": ADAPTERS,
        }
        # Waiting for a connection is connecting: bounded like a connect, not like a statement.
        wait = max(settings.connect_timeout, 1.0)
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(settings.pool_size, 1),
            kwargs=self._kwargs,
            configure=self._configure,
            timeout=wait,
            # The pool retries a lost connection with doubling delays (1, 2, 4 ... s) until this many seconds
            # have passed: left at its 5-minute default, a database back after a short outage could wait half
            # a minute for the next attempt. Giving up early lets the next call start a fresh, immediate one -
            # but not before a caller's wait is over, or that caller would wait on with nobody trying: tries
            # stay at most 2 s apart while anyone waits, so a database that is back is found within about 2 s.
            reconnect_timeout=max(RECONNECT_SECONDS, wait),
            name="agent-ops",
            open=False,
        )
        self._pool.open(wait=False)

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(self._statement_timeout_ms)))

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _query(function: str, names: tuple[str, ...]) -> sql.Composed:
        return sql.SQL("select public.{}({})").format(
            sql.Identifier(function),
            sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in names),
        )

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        key = (function, tuple(params))
        values = [Jsonb(v) if k in JSONB_PARAMS and v is not None else v for k, v in params.items()]
        try:
            with self._pool.connection() as conn:
                query = self._bytes.get(key)
                if query is None:
                    # Composed once, then sent as bytes: psycopg caches the conversion of a bytes query.
                    query = self._bytes[key] = self._query(*key).as_bytes(conn)
                row = conn.execute(query, values).fetchone()
        except psycopg_pool.PoolTimeout:
            raise TransportError(f"{function}: no database connection available (pool timeout)") from None
        except psycopg.Error as error:
            mapped = from_psycopg(error, function)
            if isinstance(mapped, TransportError):
                # After a restart every idle connection is dead: find out now, not one failed call at a time.
                self._pool.check()
            raise mapped from None
        return row[0] if row else None

    @contextmanager
    def listening(self, channel: str) -> Iterator[Poll]:
        """A dedicated session connection LISTENing on `channel`; yields `poll(timeout) -> payloads`.

        LISTEN needs a session: a direct or session-pooler connection, never the transaction pooler.
        """
        try:
            with psycopg.connect(self._conninfo, **self._kwargs) as conn:
                conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))

                def poll(timeout: float) -> list[str]:
                    try:
                        # Return at the first notification: waking promptly is the point.
                        return [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]
                    except psycopg.Error as error:
                        raise from_psycopg(error, f"listen {channel}") from None

                yield poll
        except psycopg.Error as error:
            raise from_psycopg(error, f"listen {channel}") from None

    def close(self) -> None:
        self._pool.close()
