"""The Python heartbeat: ops_heartbeat() plus trigger plug-ins, over both transports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from agent_ops import Ops
from agent_ops.heartbeat import run_forever, run_once
from agent_ops.triggers import PluginTrigger, TriggerContext, registered, trigger, unregister_all
from tests.kit.settings import direct_settings


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    unregister_all()
    yield
    unregister_all()


def research(_: TriggerContext) -> dict[str, Any]:
    return {"agent_id": "brain", "title": "Inbox has mail", "steps": [{"kind": "analyze", "payload": {"box": "ops"}}]}


def test_decorator_registers_plugins() -> None:
    trigger("inbox", window=timedelta(minutes=5))(research)
    assert [(p.name, p.window) for p in registered()] == [("inbox", timedelta(minutes=5))]


def test_a_plugin_template_becomes_one_trigger_proposal_per_window(ops: Ops, conn: psycopg.Connection) -> None:
    plugin = PluginTrigger("inbox", research, window=timedelta(hours=1))
    first = run_once(ops, [plugin])
    assert first.ok
    assert first.database is not None
    assert first.database.run_id is not None
    [fired] = first.plugins["inbox"]["proposals"]
    assert (fired["status"], fired["duplicate"]) == ("accepted", False)
    again = run_once(ops, [plugin])
    assert again.plugins["inbox"]["proposals"][0]["duplicate"] is True, "same window, same template: deduped"
    rows = conn.execute("select source, dedupe_key like 'trigger-plugin:inbox:%' from ops_mission_proposals").fetchall()
    assert rows == [("trigger", True)]


def test_one_failing_or_slow_plugin_does_not_stop_the_rest(ops: Ops) -> None:
    def broken(_: TriggerContext) -> None:
        raise RuntimeError("metrics API down")

    def slow(_: TriggerContext) -> None:
        time.sleep(3)

    def invalid(_: TriggerContext) -> dict[str, Any]:
        return {"agent_id": "Not Valid", "title": "x", "steps": [{"kind": "analyze"}]}

    plugins = [
        PluginTrigger("a_broken", broken),
        PluginTrigger("b_invalid", invalid),
        PluginTrigger("c_inbox", research),
        PluginTrigger("d_slow", slow),
        PluginTrigger("e_late", research),
    ]
    started = time.monotonic()
    run = run_once(ops, plugins, plugin_budget=1.0)
    assert time.monotonic() - started < 2.5, "the budget bounds a hanging plug-in"
    assert run.plugins["a_broken"] == {"error": "RuntimeError: metrics API down"}
    assert run.plugins["b_invalid"]["errors"][0].startswith("InvalidInput: agent_id must match")
    assert run.plugins["c_inbox"]["proposals"][0]["status"] == "accepted"
    assert run.plugins["d_slow"]["error"].startswith("timed out")
    assert run.plugins["e_late"] == {"skipped": "heartbeat budget spent"}


def test_a_failed_call_is_reported_not_raised() -> None:
    with Ops(direct_settings("postgresql://postgres@127.0.0.1:9/x", retries=0, timeout=1)) as ops:
        run = run_once(ops)
    assert not run.ok
    assert run.error is not None
    assert run.error.startswith("TransportError")


def test_run_forever_beats_until_stopped(ops: Ops, conn: psycopg.Connection) -> None:
    stop = threading.Event()
    runs: list[Any] = []

    def record(run: Any) -> None:
        runs.append(run)
        if len(runs) == 3:
            stop.set()

    last = run_forever(ops, 0.05, stop=stop, on_run=record)
    assert last is runs[-1]
    assert conn.execute("select count(*) from ops_action_runs where action = 'heartbeat'").fetchone() == (3,)
