"""Notifications end to end: the outbox in Postgres, the deliverer (agent_ops/notify.py) and its three drivers,
against a local HTTP receiver standing in for Slack, Discord and plain JSON webhooks.

What is proven: the bodies of each format and the idempotency key (header and body); a 500 retried with
backoff; a 429 honoured (Retry-After, the whole sink paused); no duplicate after a deliverer is killed between
its HTTP request and its report except the one documented re-send under the same key; a late-committing event
still notified; no webhook URL printed, stored or reported; queue:stalled reaching a sink from the heartbeat;
delivery from `agent-ops notify`, `agent-ops heartbeat --every` and `agent-ops serve`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from agent_ops.client import Ops
from agent_ops.notify import Deliverer, DeliveryLoop, parse_retry_after, redact
from tests.kit.children import agent_ops, wait_until
from tests.kit.children import environment as kit_environment
from tests.kit.database import ROOT, scalar
from tests.kit.settings import direct_settings

SECRET = "T000SECRET/B000SECRET/xoxSECRETtoken123"


# -- a webhook receiver ---------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


class Receiver:
    """A local HTTP server that records every POST and answers from a script per path (default 200 ok).

    `hold(path)` makes the next request to `path` wait (after it is recorded) until `release()`: a deliverer
    can be killed while its request is in flight.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[Reply]] = {}
        self._held: set[str] = set()
        self.arrived = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
                    )
                    replies = receiver.script.get(self.path) or []
                    reply = replies.pop(0) if replies else Reply()
                    hold = self.path in receiver._held
                    receiver._held.discard(self.path)
                if hold:
                    receiver.arrived.set()
                    receiver.released.wait(30)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body.encode())
                except OSError:
                    pass  # the deliverer is gone

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def answer(self, path: str, *replies: Reply) -> None:
        self.script.setdefault(path, []).extend(replies)

    def hold(self, path: str) -> None:
        self._held.add(path)

    def release(self) -> None:
        self.released.set()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


# -- helpers --------------------------------------------------------------------------------------------------


def set_notifications(conn: psycopg.Connection, *sinks: dict[str, Any], **settings: Any) -> None:
    value = {"enabled": True, "sinks": list(sinks), **settings}
    conn.execute("select public.ops_set_policy('notifications', %s, 'test')", (Jsonb(value),))


def emit(conn: psycopg.Connection, type_: str, title: str, *tags: str, **payload: Any) -> int:
    """An event as the loop writes it (the owner may write the reserved entities queue:, worker: ...)."""
    return int(
        scalar(
            conn,
            "select ops_internal.emit_event(%s, 'system', %s, %s, %s)",
            (type_, title, Jsonb(payload), list(tags)),
        )
    )


def outbox(conn: psycopg.Connection) -> list[dict[str, Any]]:
    names = ("id", "sink", "event_type", "status", "attempts", "last_status", "last_error", "next_attempt_at")
    found = conn.execute(f"select {', '.join(names)} from public.ops_notifications order by id").fetchall()  # noqa: S608
    return [dict(zip(names, row, strict=True)) for row in found]


def make_due(conn: psycopg.Connection) -> None:
    """Time passes: every retry and pause is over."""
    conn.execute("update public.ops_notifications set next_attempt_at = now() where status = 'pending'")
    conn.execute("update public.ops_notification_cursors set paused_until = null, rate_tat = null")


def deliverer(db_url: str, environ: dict[str, str], ops: Ops | None = None) -> Deliverer:
    return Deliverer(ops or Ops(direct_settings(db_url)), name="test-deliverer", environ=environ)


def cli_environment(db_url: str, **extra: str) -> dict[str, str]:
    home = str(ROOT / ".agent-ops" / "cli-tests-never-started")
    return kit_environment(DATABASE_URL=db_url, AGENT_OPS_HOME=home, **extra)


# -- the formats and the key ----------------------------------------------------------------------------------


def test_bodies_per_format_carry_the_event_and_the_idempotency_key(
    ops: Ops, conn: psycopg.Connection, receiver: Receiver
) -> None:
    set_notifications(
        conn,
        {"name": "slack", "url_env": "SLACK_URL", "format": "slack"},
        {"name": "discord", "url_env": "DISCORD_URL", "format": "discord", "types": ["queue:stalled"]},
        {"name": "json", "url_env": "JSON_URL", "tags": ["warning"]},
    )
    stalled = emit(conn, "queue:stalled", "Queue crawl stalled <!channel> @everyone", "crawl", "warning", kind="crawl")
    conn.execute("select public.ops_set_policy('auto_approve', '{\"enabled\": true, \"allowed_step_kinds\": []}', 't')")
    pending = ops.propose("brain", "Tweet the launch", [{"kind": "post_tweet"}])
    assert pending.status == "pending"
    environ = {
        "SLACK_URL": receiver.url("/slack"),
        "DISCORD_URL": receiver.url("/discord"),
        "JSON_URL": receiver.url("/json"),
    }

    with Deliverer(ops, name="test", environ=environ) as sender:
        run = sender.deliver_once()
    assert (run.claimed, run.sent, run.retrying, run.dead) == (4, 4, 0, 0)

    rows = {(r.sink, r.event_type): r for r in ops.notifications()}
    assert set(rows) == {
        ("slack", "queue:stalled"),
        ("slack", "proposal:created"),
        ("discord", "queue:stalled"),
        ("json", "queue:stalled"),
    }
    assert all(r.status == "sent" and r.attempts == 1 for r in rows.values())
    for request in receiver.received:
        assert request.headers["idempotency-key"].startswith("agent-ops-")
        assert request.headers["content-type"] == "application/json"

    slack = {r.headers["idempotency-key"]: r.body for r in receiver.at("/slack")}
    stall_key = rows[("slack", "queue:stalled")].idempotency_key
    text = slack[stall_key]["text"]
    assert text.startswith("*[queue:stalled] Queue crawl stalled &lt;!channel&gt; @everyone*")
    assert f"event #{stalled}" in text
    assert text.endswith(stall_key)
    approval = slack[rows[("slack", "proposal:created")].idempotency_key]["text"]
    assert approval.startswith("*[proposal:created] Waiting for a person: Proposal #")
    assert f"agent-ops approve {pending.proposal_id}" in approval

    [discord] = receiver.at("/discord")
    assert discord.body["allowed_mentions"] == {"parse": []}
    assert discord.body["content"].splitlines()[-1] == discord.headers["idempotency-key"]

    [plain] = receiver.at("/json")
    assert (
        plain.body["idempotency_key"]
        == plain.headers["idempotency-key"]
        == rows[("json", "queue:stalled")].idempotency_key
    )
    assert plain.body["event"]["id"] == stalled
    assert plain.body["event"]["payload"] == {"kind": "crawl"}
    assert plain.body["matched"] == "tag"
    assert plain.body["sink"] == "json"
    assert plain.body["attempt"] == 1

    with Deliverer(ops, name="test", environ=environ) as sender:
        assert sender.deliver_once().claimed == 0, "sent is sent: nothing goes out twice"
    assert len(receiver.received) == 4


# -- retries --------------------------------------------------------------------------------------------------


def test_a_500_is_retried_with_backoff_under_the_same_key(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "types": ["mission:failed"]})
    emit(conn, "mission:failed", "Mission #1 failed", "warning")
    receiver.answer("/hook", Reply(500, body="upstream exploded"))
    with deliverer(db_url, {"HOOK": receiver.url("/hook")}) as sender:
        first = sender.deliver_once()
        [row] = outbox(conn)
        assert (first.retrying, row["status"], row["attempts"], row["last_status"]) == (1, "pending", 1, 500)
        assert row["last_error"] == "HTTP 500 Internal Server Error: upstream exploded"
        wait = row["next_attempt_at"] - datetime.now(UTC)
        assert timedelta(seconds=5) < wait <= timedelta(seconds=10), "the first retry waits 10 s"
        assert sender.deliver_once().claimed == 0, "not before its time"

        make_due(conn)
        second = sender.deliver_once()
    [row] = outbox(conn)
    assert (second.sent, row["status"], row["attempts"]) == (1, "sent", 2)
    keys = [r.headers["idempotency-key"] for r in receiver.at("/hook")]
    assert keys == [f"agent-ops-{row['id']}"] * 2, "the retry carries the same key"


def test_a_429_honours_retry_after_and_pauses_the_whole_sink(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    set_notifications(
        conn,
        {"name": "limited", "url_env": "LIMITED", "tags": ["warning"]},
        {"name": "other", "url_env": "OTHER", "tags": ["warning"]},
    )
    emit(conn, "worker:circuit_open", "Circuit open: crawl", "warning")
    receiver.answer("/limited", Reply(429, {"Retry-After": "120"}, "slow down"))
    environ = {"LIMITED": receiver.url("/limited"), "OTHER": receiver.url("/other")}
    with deliverer(db_url, environ) as sender:
        sender.deliver_once()
        [limited, other] = outbox(conn)
        assert (limited["status"], limited["last_status"], other["status"]) == ("pending", 429, "sent")
        assert timedelta(seconds=110) < limited["next_attempt_at"] - datetime.now(UTC) <= timedelta(seconds=120)
        paused = scalar(conn, "select paused_until - now() from ops_notification_cursors where sink = 'limited'")
        assert timedelta(seconds=110) < paused <= timedelta(seconds=120)

        emit(conn, "heartbeat:failed", "Heartbeat #9 had 1 error(s)", "warning")
        run = sender.deliver_once()
        assert [d["sink"] for d in run.deliveries] == ["other"], "the paused sink gets nothing new either"
        assert len(receiver.at("/limited")) == 1

        make_due(conn)
        assert sender.deliver_once().sent == 2, "after the pause both go out"
    assert len(receiver.at("/limited")) == 3
    assert {r["status"] for r in outbox(conn)} == {"sent"}


def test_retry_after_parses_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("999999999") == 86400
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_competing_deliverers_send_each_message_once(db_url: str, conn: psycopg.Connection, receiver: Receiver) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    for n in range(30):
        emit(conn, "queue:stalled", f"Queue kind{n} stalled", "warning")
    ready = threading.Barrier(4)

    def deliver(name: str) -> None:
        with Deliverer(
            Ops(direct_settings(db_url)), name=name, environ={"HOOK": receiver.url("/hook")}, max_items=3
        ) as d:
            ready.wait()
            while d.deliver_once().claimed:
                pass

    threads = [threading.Thread(target=deliver, args=(f"deliverer-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    keys = [r.headers["idempotency-key"] for r in receiver.at("/hook")]
    assert len(keys) == len(set(keys)) == 30
    assert {(r["status"], r["attempts"]) for r in outbox(conn)} == {("sent", 1)}


# -- crash between send and report ----------------------------------------------------------------------------


def test_a_deliverer_killed_between_send_and_report_resends_only_that_message_under_its_key(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    """At-least-once, documented: the in-flight message goes out once more with the same Idempotency-Key
    after its lease expires; every other message exactly once."""
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    for n in range(3):
        emit(conn, "queue:stalled", f"Queue kind{n} stalled", "warning")
    receiver.hold("/hook")
    child = subprocess.Popen(
        [sys.executable, "-m", "agent_ops", "notify", "--json"],
        env=cli_environment(db_url, HOOK=receiver.url("/hook")),
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.arrived.wait(30), "the deliverer never sent"
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    receiver.release()
    assert [r["status"] for r in outbox(conn)] == ["sending"] * 3, "killed before any report"

    with deliverer(db_url, {"HOOK": receiver.url("/hook")}) as sender:
        assert sender.deliver_once().claimed == 0, "nothing is taken back while the lease runs"
        conn.execute("update public.ops_notifications set lease_expires_at = now() - interval '1 second'")
        rerun = sender.deliver_once()
        assert (rerun.claimed, rerun.sent) == (3, 3)
        assert sender.deliver_once().claimed == 0

    rows = outbox(conn)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 2)] * 3
    keys = [r.headers["idempotency-key"] for r in receiver.at("/hook")]
    first = f"agent-ops-{rows[0]['id']}"
    assert keys.count(first) == 2, "the message in flight at the crash is sent again, under its key"
    assert sorted(keys) == sorted([first, first, *(f"agent-ops-{r['id']}" for r in rows[1:])]), "nothing else twice"
    bodies = [r.body for r in receiver.at("/hook") if r.headers["idempotency-key"] == first]
    assert bodies[0]["event"] == bodies[1]["event"]
    assert bodies[0]["idempotency_key"] == first


# -- the cursor -----------------------------------------------------------------------------------------------


def test_an_event_that_commits_after_a_later_one_is_still_notified(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    with psycopg.connect(db_url) as slow:  # a transaction that draws its event id first and commits last
        early = emit(slow, "mission:failed", "Mission #1 failed (commits late)", "warning")
        late = emit(conn, "mission:failed", "Mission #2 failed", "warning")
        assert early < late
        with deliverer(db_url, {"HOOK": receiver.url("/hook")}) as sender:
            assert [d["id"] for d in sender.deliver_once().deliveries] != []
            assert [r["event_type"] for r in outbox(conn)] == ["mission:failed"]
            slow.commit()
            sender.deliver_once()
    titles = sorted(r.body["event"]["title"] for r in receiver.at("/hook"))
    assert titles == ["Mission #1 failed (commits late)", "Mission #2 failed"]
    assert scalar(conn, "select last_event_id from ops_notification_cursors where sink = 'hook'") == late


# -- secrets --------------------------------------------------------------------------------------------------


def test_the_webhook_url_is_never_printed_stored_or_reported(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    set_notifications(
        conn,
        {"name": "revoked", "url_env": "REVOKED_URL", "format": "slack", "tags": ["warning"]},
        {"name": "down", "url_env": "DOWN_URL", "tags": ["warning"]},
        {"name": "unset", "url_env": "UNSET_URL", "tags": ["warning"]},
        {"name": "witness", "url_env": "WITNESS_URL", "types": ["notification:dead"]},
    )
    revoked = receiver.url(f"/services/{SECRET}")
    receiver.answer(f"/services/{SECRET}", Reply(404, body=f"no_service: {revoked} was revoked"))
    emit(conn, "queue:stalled", "Queue crawl stalled", "warning")

    result = agent_ops(
        "notify",
        "--json",
        env=cli_environment(
            db_url,
            REVOKED_URL=revoked,
            DOWN_URL=f"http://127.0.0.1:{dead_port}/hooks/{SECRET}",
            WITNESS_URL=receiver.url("/witness"),
        ),
        cwd=ROOT / "tests",
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    outcomes = {d["sink"]: (d["outcome"], d.get("http_status")) for d in run["deliveries"]}
    assert outcomes == {"revoked": ("dead", 404), "down": ("pending", None), "unset": ("pending", None)}
    errors = {d["sink"]: d["error"] for d in run["deliveries"]}
    assert "<sink URL>" in errors["revoked"], "the sink's echo of its own URL is redacted"
    assert (
        errors["unset"]
        == "environment variable UNSET_URL is not set where the deliverer " + (errors["unset"].split("deliverer ")[1])
    )

    text = agent_ops(  # the dead letter of the first run goes out now, to the sink that wants it
        "notify",
        env=cli_environment(
            db_url,
            DOWN_URL=f"http://127.0.0.1:{dead_port}/hooks/{SECRET}",
            WITNESS_URL=receiver.url("/witness"),
        ),
        cwd=ROOT / "tests",
    )
    listing = agent_ops("notify", "--list", "--json", env=cli_environment(db_url), cwd=ROOT / "tests")
    stored = json.dumps(
        conn.execute(
            "select coalesce(jsonb_agg(to_jsonb(n)), '[]') from ops_notifications n"
            " union all select coalesce(jsonb_agg(to_jsonb(e)), '[]') from ops_agent_events e"
            " union all select coalesce(jsonb_agg(to_jsonb(p)), '[]') from ops_policy p"
            " union all select coalesce(jsonb_agg(to_jsonb(c)), '[]') from ops_notification_cursors c"
        ).fetchall()
    )
    for place, content in {
        "notify --json": result.stdout + result.stderr,
        "notify": text.stdout + text.stderr,
        "notify --list": listing.stdout + listing.stderr,
        "the database": stored,
        "the notification:dead message": json.dumps([r.body for r in receiver.at("/witness")]),
    }.items():
        assert "SECRET" not in content, f"{place} shows the webhook URL"
    assert receiver.at("/witness"), "the dead letter itself was notified to the sink that wants it"


def test_redact_removes_the_url_and_its_secret_parts() -> None:
    url = f"https://hooks.slack.com/services/{SECRET}?token=abcdefgh12345"
    message = f"error for url '{url}' (path /services/{SECRET}, query token=abcdefgh12345)"
    assert "SECRET" not in redact(message, url)
    assert "abcdefgh12345" not in redact(message, url)


# -- where delivery runs --------------------------------------------------------------------------------------


def test_queue_stalled_from_the_heartbeat_reaches_a_sink(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    """A kind with no worker: the heartbeat opens a stall episode (queue:stalled) and enqueues it; a default
    sink receives it."""
    set_notifications(conn, {"name": "ops", "url_env": "OPS_HOOK", "format": "slack"})
    conn.execute(
        "select ops_set_policy('auto_approve', '{\"enabled\": true, \"allowed_step_kinds\": [\"crawl\"]}', 't')"
    )
    conn.execute(
        """select ops_create_proposal('{"agent_id": "brain", "title": "waits", "steps": [{"kind": "crawl"}]}')"""
    )
    conn.execute("update ops_mission_steps set run_after = now() - interval '1 day' where kind = 'crawl'")
    with Ops(direct_settings(db_url)) as ops:
        beat = ops.heartbeat()
        assert beat.raw["stalls"]["opened"] == 1
        assert beat.raw["notifications"]["enqueued"] == 1
        with Deliverer(ops, name="test", environ={"OPS_HOOK": receiver.url("/ops")}) as sender:
            assert sender.deliver_once().sent == 1
        ops.heartbeat()
        with Deliverer(ops, name="test", environ={"OPS_HOOK": receiver.url("/ops")}) as sender:
            assert sender.deliver_once().claimed == 0, "one episode, one notification"
    [message] = receiver.at("/ops")
    assert message.body["text"].startswith("*[queue:stalled]")


def test_notify_cli_delivers_once_and_lists_the_outbox(
    db_url: str, conn: psycopg.Connection, receiver: Receiver
) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]}, max_attempts=1)
    emit(conn, "mission:failed", "Mission #1 failed", "warning")
    emit(conn, "mission:failed", "Mission #2 failed", "warning")
    receiver.answer("/hook", Reply(200), Reply(503, body="maintenance"))
    env = cli_environment(db_url, HOOK=receiver.url("/hook"))
    text = agent_ops("notify", env=env, cwd=ROOT / "tests")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == "notifications: 2 claimed, 1 sent, 0 to retry, 1 dead"
    assert "to hook attempt 1: dead - HTTP 503 Service Unavailable: maintenance" in text.stdout
    dead = json.loads(agent_ops("notify", "--list", "--status", "dead", "--json", env=env, cwd=ROOT / "tests").stdout)
    assert [(n["sink"], n["status"], n["last_status"], n["event_title"]) for n in dead] == [
        ("hook", "dead", 503, "Mission #2 failed")
    ]
    table = agent_ops("notify", "--list", env=env, cwd=ROOT / "tests").stdout
    assert "sent" in table
    assert "dead" in table
    assert "notification:dead" not in table.split("\n")[0]
    again = json.loads(agent_ops("notify", "--json", env=env, cwd=ROOT / "tests").stdout)
    assert again["claimed"] == 0, "the notification:dead event is not sent to the sink it is about"
    down = agent_ops(
        "notify", env=cli_environment("postgresql://postgres@127.0.0.1:9/x", AGENT_OPS_RETRIES="0"), cwd=ROOT
    )
    assert down.returncode == 1
    assert down.stdout.startswith("notifications failed: TransportError")


def test_heartbeat_every_delivers_after_each_beat(db_url: str, conn: psycopg.Connection, receiver: Receiver) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    emit(conn, "heartbeat:failed", "Heartbeat #1 had 1 error(s)", "warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_ops", "heartbeat", "--every", "0.2", "--json"],
        env=cli_environment(db_url, HOOK=receiver.url("/hook")),
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: receiver.at("/hook"), 20, "a delivery from the heartbeat loop")
        emit(conn, "mission:failed", "Mission #3 failed", "warning")
        wait_until(lambda: len(receiver.at("/hook")) == 2, 20, "the next beat's delivery")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(line["notifications"]["ok"] for line in lines)
    assert sum(line["notifications"]["sent"] for line in lines) == 2
    assert "127.0.0.1" not in out + err


def test_serve_delivers_from_a_background_thread(db_url: str, conn: psycopg.Connection, receiver: Receiver) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_ops", "serve", "--port", str(port), "--notify-every", "0.2"],
        env=cli_environment(db_url, HOOK=receiver.url("/hook")),
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        emit(conn, "worker:circuit_open", "Circuit open: crawl", "warning")
        wait_until(lambda: receiver.at("/hook"), 30, "a delivery from agent-ops serve")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "notifications: delivered every 0.2 s" in err
    assert receiver.at("/hook")[0].body["event"]["type"] == "worker:circuit_open"


def test_the_delivery_loop_keeps_going_and_stops(db_url: str, conn: psycopg.Connection, receiver: Receiver) -> None:
    set_notifications(conn, {"name": "hook", "url_env": "HOOK", "tags": ["warning"]})
    with (
        deliverer(db_url, {"HOOK": receiver.url("/hook")}) as sender,
        DeliveryLoop(sender, every=0.05) as loop,
    ):
        emit(conn, "queue:stalled", "Queue crawl stalled", "warning")
        wait_until(lambda: receiver.at("/hook"), 20, "the loop's delivery")
        emit(conn, "queue:stalled", "Queue analyze stalled", "warning")
        wait_until(lambda: len(receiver.at("/hook")) == 2, 20, "the loop's next delivery")
    assert loop.last is not None
    assert loop.last.ok
