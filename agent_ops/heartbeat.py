"""The heartbeat from outside the database: `ops_heartbeat()` plus the Python trigger plug-ins.

Three ways to drive it: Supabase Cron calling `ops_heartbeat()` in SQL (plug-ins then need one of the
others), `agent-ops heartbeat --every N` on a VPS, or a crontab hitting `agent-ops serve`'s
`/api/ops/heartbeat`. Whichever runs, the database keeps it single-flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_ops.client import Ops
from agent_ops.errors import OpsError
from agent_ops.models import HeartbeatResult
from agent_ops.triggers import PluginTrigger, TriggerContext, template_to_proposal, templates_of, utc_now

log = logging.getLogger("agent_ops.heartbeat")


@dataclass
class HeartbeatRun:
    """One heartbeat: the database's result (or why it failed) and each plug-in's outcome."""

    database: HeartbeatResult | None = None
    error: str | None = None
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.database is None or self.database.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "heartbeat": self.database.raw if self.database else None,
            "plugins": self.plugins,
        }


def evaluate_plugins(ops: Ops, plugins: Sequence[PluginTrigger], budget_seconds: float) -> dict[str, dict[str, Any]]:
    """Run each plug-in within what is left of the budget; one failing or slow plug-in never stops the rest.

    A plug-in still running when the budget is spent is reported as timed out and its thread abandoned.
    """
    outcomes: dict[str, dict[str, Any]] = {}
    now = utc_now()
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trigger-plugin")
    try:
        for plugin in plugins:
            remaining = budget_seconds - (time.monotonic() - started)
            if remaining <= 0:
                outcomes[plugin.name] = {"skipped": "heartbeat budget spent"}
                continue
            future = pool.submit(plugin.check, TriggerContext(now=now, ops=ops))
            try:
                templates = templates_of(future.result(timeout=remaining))
            except FutureTimeout:
                outcomes[plugin.name] = {"error": f"timed out (budget {budget_seconds:g}s)"}
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trigger-plugin")
                continue
            except Exception as error:
                log.exception("trigger plug-in %s failed", plugin.name)
                outcomes[plugin.name] = {"error": f"{type(error).__name__}: {error}"}
                continue
            outcomes[plugin.name] = _propose_all(ops, plugin, templates, now)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes


def _propose_all(ops: Ops, plugin: PluginTrigger, templates: Sequence[Any], now: datetime) -> dict[str, Any]:
    fired: list[dict[str, Any]] = []
    errors: list[str] = []
    for template in templates:
        try:
            result = ops.propose(
                **template_to_proposal(template), source="trigger", dedupe_key=plugin.dedupe_key(template, now)
            )
        except (OpsError, KeyError, TypeError) as error:
            errors.append(f"{type(error).__name__}: {error}")
            continue
        fired.append(
            {
                "proposal_id": result.proposal_id,
                "status": result.status,
                "duplicate": result.duplicate,
                "reason": result.reason,
            }
        )
    outcome: dict[str, Any] = {"proposals": fired}
    if errors:
        outcome["errors"] = errors
    return outcome


def run_once(ops: Ops, plugins: Sequence[PluginTrigger] = (), plugin_budget: float = 5.0) -> HeartbeatRun:
    run = HeartbeatRun()
    try:
        run.database = ops.heartbeat()
    except OpsError as error:
        run.error = f"{type(error).__name__}: {error}"
        return run
    if run.database.skipped:
        return run  # another heartbeat is running and evaluates the plug-ins
    if plugins:
        run.plugins = evaluate_plugins(ops, plugins, plugin_budget)
    return run


def run_forever(
    ops: Ops,
    every: float,
    plugins: Sequence[PluginTrigger] = (),
    *,
    stop: threading.Event,
    on_run: Callable[[HeartbeatRun], None] = lambda _run: None,
    jitter: float = 0.1,
) -> HeartbeatRun | None:
    """Beat every `every` seconds (± `jitter` of it) until `stop` is set; returns the last run."""
    last: HeartbeatRun | None = None
    while not stop.is_set():
        last = run_once(ops, plugins, plugin_budget=min(5.0, every / 2))
        on_run(last)
        stop.wait(every * random.uniform(1 - jitter, 1 + jitter))  # noqa: S311 - scheduling jitter, not security
    return last
