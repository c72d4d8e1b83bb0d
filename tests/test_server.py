"""`agent-ops serve`: the heartbeat endpoint and /healthz over real HTTP (uvicorn on a free port)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import psycopg
import pytest

from agent_ops import Ops, Secret
from agent_ops.server import BackgroundServer, create_app
from tests.kit.settings import direct_settings

KEY = "ops-key-for-tests-only"


@pytest.fixture
def serve(db_url: str) -> Iterator[Callable[[str | None], str]]:
    """Start the app with a given OPS_KEY (or none); returns its base URL."""
    with ExitStack() as stack:

        def start(ops_key: str | None) -> str:
            settings = dataclasses.replace(direct_settings(db_url), ops_key=Secret(ops_key) if ops_key else None)
            ops = stack.enter_context(Ops(settings))
            return stack.enter_context(BackgroundServer(create_app(ops))).url

        yield start


def test_the_right_key_runs_the_heartbeat(serve: Callable[[str | None], str], conn: psycopg.Connection) -> None:
    base = serve(KEY)
    for method in ("GET", "POST"):
        response = httpx.request(method, f"{base}/api/ops/heartbeat", headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True
        assert body["heartbeat"]["run_id"] is not None
    assert conn.execute("select count(*) from ops_action_runs").fetchone() == (2,)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic b3BzOmtleQ=="}]
)
def test_a_missing_or_wrong_key_is_401(
    serve: Callable[[str | None], str], conn: psycopg.Connection, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{serve(KEY)}/api/ops/heartbeat", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert KEY not in response.text
    assert conn.execute("select count(*) from ops_action_runs").fetchone() == (0,)


def test_without_ops_key_the_endpoint_stays_closed(serve: Callable[[str | None], str]) -> None:
    response = httpx.post(f"{serve(None)}/api/ops/heartbeat", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert "OPS_KEY is not set" in response.json()["error"]


def test_healthz(serve: Callable[[str | None], str]) -> None:
    base = serve(None)
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    deep = httpx.get(f"{base}/healthz", params={"db": "1"})
    assert deep.status_code == 200
    assert deep.json()["database"] == {"system_enabled": True}


def test_wrong_keys_at_the_endpoint_are_throttled_and_count_for_the_console_too(
    serve: Callable[[str | None], str], conn: psycopg.Connection
) -> None:
    """Without CONSOLE_KEY the OPS_KEY opens the console: guesses at either count against the same client."""
    base = serve(KEY)
    for _ in range(5):
        wrong = httpx.post(f"{base}/api/ops/heartbeat", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
    refused = httpx.post(f"{base}/api/ops/heartbeat", headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 429, "even the right key: the 429 must not tell which guess was right"
    assert int(refused.headers["retry-after"]) > 0
    assert conn.execute("select count(*) from ops_action_runs").fetchone() == (0,)
    with httpx.Client(base_url=base) as browser:
        login = browser.get("/console/login").text
        csrf = login.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        sign_in = browser.post("/console/login", data={"csrf": csrf, "key": KEY})
        assert sign_in.status_code == 429


@pytest.mark.parametrize("path", ["/healthz", "/api/ops/heartbeat", "/console/static/console.css", "/nowhere"])
def test_every_answer_is_no_store_and_nosniff(serve: Callable[[str | None], str], path: str) -> None:
    response = httpx.get(f"{serve(KEY)}{path}")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
