"""Test harness: the embedded server, a migrated template database, and a fresh clone for every test.

The server is the same one `agent-ops db start` runs (started here when it is not running). The template
is built once per session with `agent-ops migrate` and the seed; pytest-postgresql clones it per test.
Fixtures live here; the helpers tests, bench and the chaos suite share are the test kit (tests/kit/).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from pytest_postgresql import factories

from agent_ops.client import Ops
from agent_ops.localpg import LocalPostgres
from tests.kit.database import ROOT, migrate_and_seed
from tests.kit.settings import direct_settings, rest_settings, server_url
from tests.postgrest_standin import StandIn, running

SERVER = LocalPostgres(ROOT / ".agent-ops").start()


def _load_schema(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object) -> None:
    migrate_and_seed(server_url(user, password, host, port, dbname))


# One template per test session, so parallel sessions (two terminals, helpers) never collide.
postgresql_noproc = factories.postgresql_noproc(
    host="127.0.0.1",
    port=SERVER.port,
    user="postgres",
    password=SERVER.password,
    dbname=f"agent_ops_test_{os.getpid()}",
    load=[_load_schema],
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def db_url(postgresql: psycopg.Connection) -> str:
    """A fresh, migrated and seeded database for this test only."""
    info = postgresql.info
    return server_url(info.user, info.password, info.host, info.port, info.dbname)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection as the migration owner (postgres)."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def admin_url() -> str:
    return SERVER.url("postgres")


@pytest.fixture
def make_empty_db(admin_url: str) -> Iterator[Callable[[], str]]:
    """Creates bootstrapped but unmigrated databases (a fresh Supabase project, as a push sees it)."""
    created: list[str] = []

    def create() -> str:
        name = f"agent_ops_empty_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'create database "{name}"'.encode())
        created.append(name)
        return SERVER.url(name)

    yield create
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'drop database if exists "{name}" with (force)'.encode())


@pytest.fixture
def empty_db_url(make_empty_db: Callable[[], str]) -> str:
    return make_empty_db()


@pytest.fixture
def standin(db_url: str) -> Iterator[StandIn]:
    """The PostgREST stand-in serving this test's database."""
    with running(db_url) as server:
        yield server


@pytest.fixture(params=["direct", "postgrest"])
def transport_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def ops(transport_name: str, db_url: str, request: pytest.FixtureRequest) -> Iterator[Ops]:
    """The client over each transport in turn, against this test's database."""
    if transport_name == "direct":
        settings = direct_settings(db_url)
    else:
        settings = rest_settings(request.getfixturevalue("standin"))
    with Ops(settings) as client:
        yield client
