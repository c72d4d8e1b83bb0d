"""/metrics of `agent-ops serve` over real HTTP against a real database: the Prometheus families, one
ops_metrics() call per scrape, who may read it, and the reads behind it through both transports."""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_ops import Ops, Secret, step
from agent_ops.processes import Processes
from agent_ops.server import BackgroundServer, create_app, loopback_host
from tests.kit.children import environment
from tests.kit.settings import direct_settings

KEY = "ops-key-for-metrics-tests"
Serve = Callable[..., str]


class CountingOps(Ops):
    """The real client, noting the name of every ops_* function it calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.functions: list[str] = []

    def call(self, function: str, params: Any = None, *, retry: bool = False) -> Any:
        self.functions.append(function)
        return super().call(function, params, retry=retry)


@pytest.fixture
def serve(db_url: str) -> Iterator[Serve]:
    """The app on 127.0.0.1 with OPS_KEY `ops_key` (or none); /metrics open to loopback peers when asked."""
    with ExitStack() as stack:

        def start(ops_key: str | None = KEY, *, open_on_loopback: bool = False, ops: Ops | None = None) -> str:
            settings = dataclasses.replace(direct_settings(db_url), ops_key=Secret(ops_key) if ops_key else None)
            client = ops or stack.enter_context(Ops(settings))
            app = create_app(client, metrics_open_on_loopback=open_on_loopback)
            return stack.enter_context(BackgroundServer(app)).url

        yield start


def scrape(base: str, **headers: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape, which must succeed."""
    response = httpx.get(f"{base}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_one_scrape_shows_queue_workers_breakers_stalls_steps_heartbeat_and_notifications(
    serve: Serve, db_url: str, conn: psycopg.Connection
) -> None:
    with Ops(direct_settings(db_url)) as ops:
        ops.set_policy("worker_policy", {"max_attempts": 1, "circuit_breaker_threshold": 1}, "test")
        for title in ("a", "b", "c", "d"):
            ops.propose("brain", title, [step("crawl")])
        ops.propose("brain", "e", [step("analyze")])
        conn.execute("""select ops_worker_heartbeat('{"worker_id": "w1", "kinds": ["crawl"], "concurrency": 4}')""")
        first, second = ops.claim("w1", ["crawl"], max_steps=2)
        conn.execute(
            "update ops_mission_steps set reserved_at = now() - interval '2 seconds' where id = %s", (first.id,)
        )
        ops.complete(first.id, first.attempt, {})
        ops.claim("w1", ["crawl"], max_steps=1)
        [broken] = ops.claim("w2", ["analyze"])
        ops.fail(broken.id, broken.attempt, "boom", retryable=False)  # opens analyze's breaker (threshold 1)
        assert second.kind == "crawl"
    conn.execute("update ops_mission_steps set run_after = now() - interval '20 minutes' where status = 'queued'")
    conn.execute("""insert into ops_queue_stalls (kind, reason, since, oldest_ready_at, queued)
                    values ('crawl', 'workers_busy', now() - interval '5 minutes', now() - interval '20 minutes', 1)""")
    conn.execute("select ops_heartbeat()")
    conn.execute("select ops_internal.rollup_metrics_at(now() + interval '2 minutes')")
    conn.execute("""insert into ops_notifications (sink, event_id, event_type, matched, status, dead_at)
                    values ('ops', 1, 'mission:failed', 'type', 'dead', now())""")
    counting = CountingOps(dataclasses.replace(direct_settings(db_url), ops_key=Secret(KEY)))
    with counting:
        base = serve(ops=counting)
        samples = scrape(base, Authorization=f"Bearer {KEY}")
        assert counting.functions == ["ops_metrics"], "every family comes from one read"

    assert one(samples, "agent_ops_up") == 1
    assert one(samples, "agent_ops_queue_depth", kind="crawl") == 1
    assert one(samples, "agent_ops_queue_oldest_age_seconds", kind="crawl") >= 1200
    assert one(samples, "agent_ops_steps_running", kind="crawl") == 2
    assert one(samples, "agent_ops_worker_steps_running", worker="w1") == 2
    assert one(samples, "agent_ops_workers_live") == 2  # w1, and w2 joined by claiming
    assert one(samples, "agent_ops_kind_workers_live", kind="crawl") == 1
    assert one(samples, "agent_ops_breaker_state", kind="analyze", state="open") == 1
    assert one(samples, "agent_ops_breaker_state", kind="analyze", state="closed") == 0
    assert one(samples, "agent_ops_kind_enabled", kind="analyze") == 0
    assert one(samples, "agent_ops_stalled_kinds") == 1
    assert one(samples, "agent_ops_queue_stalled_seconds", kind="crawl", reason="workers_busy") >= 300
    assert one(samples, "agent_ops_steps_total", kind="crawl", outcome="succeeded") == 1
    assert one(samples, "agent_ops_steps_total", kind="analyze", outcome="failed") == 1
    assert one(samples, "agent_ops_step_duration_seconds_bucket", kind="crawl", le="1.0") == 0
    assert one(samples, "agent_ops_step_duration_seconds_bucket", kind="crawl", le="2.5") == 1
    assert one(samples, "agent_ops_step_duration_seconds_bucket", kind="crawl", le="+Inf") == 1
    assert one(samples, "agent_ops_step_duration_seconds_count", kind="crawl") == 1
    assert 2 <= one(samples, "agent_ops_step_duration_seconds_sum", kind="crawl") < 2.5
    assert one(samples, "agent_ops_heartbeat_runs_total") == 1
    assert one(samples, "agent_ops_heartbeat_failures_total") == 0
    assert one(samples, "agent_ops_heartbeat_last_ok") == 1
    assert one(samples, "agent_ops_heartbeat_late") == 0
    assert one(samples, "agent_ops_notifications", status="dead") == 1
    assert one(samples, "agent_ops_notifications_sent_total") == 0


def test_metrics_need_the_key_unless_served_on_loopback_and_not_proxied(serve: Serve) -> None:
    keyed = serve()
    assert httpx.get(f"{keyed}/metrics").status_code == 401
    assert httpx.get(f"{keyed}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(keyed, Authorization=f"Bearer {KEY}")["agent_ops_up"]

    local = serve(open_on_loopback=True)
    assert scrape(local)["agent_ops_up"], "a loopback bind answers loopback peers without a key"
    for proxied in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        assert httpx.get(f"{local}/metrics", headers=proxied).status_code == 401, "through a proxy: the key"
        assert scrape(local, Authorization=f"Bearer {KEY}", **proxied)["agent_ops_up"]

    closed = serve(None)
    refused = httpx.get(f"{closed}/metrics", headers={"Authorization": "Bearer anything"})
    assert refused.status_code == 503
    assert "OPS_KEY is not set" in refused.json()["error"]


def test_wrong_keys_at_metrics_count_in_the_shared_throttle(serve: Serve, conn: psycopg.Connection) -> None:
    base = serve()
    for _ in range(5):
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 429
    beat = httpx.post(f"{base}/api/ops/heartbeat", headers={"Authorization": f"Bearer {KEY}"})
    assert beat.status_code == 429, "the heartbeat endpoint refuses the same client"
    assert conn.execute("select count(*) from ops_action_runs").fetchone() == (0,)


def test_a_scrape_while_the_database_is_down_says_up_0() -> None:
    unreachable = direct_settings("postgresql://postgres:pw@127.0.0.1:1/nowhere", retries=0, timeout=2)
    with (
        Ops(dataclasses.replace(unreachable, ops_key=Secret(KEY))) as down,
        BackgroundServer(create_app(down)) as server,
    ):
        samples = scrape(server.url, Authorization=f"Bearer {KEY}")
    assert samples == {"agent_ops_up": {(): 0.0}}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)],  # noqa: S104
)  # fmt: skip
def test_which_binds_are_loopback(host: str, loopback: bool) -> None:
    assert loopback_host(host) is loopback


@pytest.fixture
def serve_process(db_url: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """`agent-ops serve --port 0 FLAGS` as a real process, without OPS_KEY; returns its loopback URL."""
    with Processes(tmp_path, environ=environment(DATABASE_URL=db_url, PYTHONUNBUFFERED="1"), cwd=tmp_path) as children:

        def start(*flags: str) -> str:
            name = f"serve-{len(children.children)}"
            process = children.start(name, [sys.executable, "-m", "agent_ops", "serve", "--port", "0", *flags])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = re.search(r"Uvicorn running on http://[^:]+:(\d+)", children.log(name))
                if found:
                    return f"http://127.0.0.1:{found.group(1)}"
                if process.poll() is not None:
                    break
                time.sleep(0.05)
            raise AssertionError(f"agent-ops serve did not start:\n{children.log(name)}")

        yield start
        children.stop(signal.SIGINT, timeout=10)


def test_serve_opens_metrics_on_a_loopback_bind_only(serve_process: Callable[..., str]) -> None:
    local = serve_process("--host", "127.0.0.1")
    assert scrape(local)["agent_ops_up"]
    everywhere = serve_process("--host", "0.0.0.0")  # noqa: S104 - the point: a bind that is not loopback
    assert httpx.get(f"{everywhere}/metrics").status_code == 503, "not a loopback bind: needs OPS_KEY, unset here"


def test_the_client_reads_workers_metrics_and_history(ops: Ops, conn: psycopg.Connection) -> None:
    """Through both transports (the `ops` fixture): the typed results of the new reads."""
    ops.propose("brain", "Research", [step("crawl")])
    conn.execute("""select ops_worker_heartbeat('{"worker_id": "w1", "kinds": ["crawl"], "host": "vps-1"}')""")
    [claimed] = ops.claim("w1", ["crawl"])
    ops.complete(claimed.id, claimed.attempt, {})
    conn.execute("select ops_internal.rollup_metrics_at(now() + interval '2 minutes')")

    [worker] = ops.workers()
    assert (worker.worker_id, worker.kinds, worker.host, worker.live, worker.running) == (
        "w1",
        ["crawl"],
        "vps-1",
        True,
        [],
    )
    metrics = ops.metrics()
    [crawl] = [k for k in metrics.kinds if k["kind"] == "crawl"]
    assert (crawl["succeeded"], crawl["duration"]["count"], metrics.workers[0]["worker_id"]) == (1, 1, "w1")
    history = ops.metrics_history(2)
    assert history.minutes == len(history.succeeded) == 120
    assert sum(v or 0 for v in history.succeeded) == 1
    assert history.from_.tzinfo is not None
    status = ops.status()
    assert [w.worker_id for w in status.workers] == ["w1"]
    assert status.alerts["heartbeat_late"] is True
    assert status.problems == ["no heartbeat has run"]
