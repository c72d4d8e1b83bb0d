"""Python trigger plug-ins: conditions that need the outside world (an inbox, a metrics API, a calendar).

A plug-in only detects. It returns proposal templates — `{agent_id, title, steps, description?, metadata?,
dedupe_key?}` — or None, and the heartbeat sends each through `ops_create_proposal` with source `trigger`
and a dedupe key, so the gates, auto-approve and audit trail apply exactly as for SQL trigger rules.

    from agent_ops.triggers import trigger

    @trigger("inbox_has_mail", window=timedelta(minutes=30))
    def inbox(context):
        if unread_mail():
            return {"agent_id": "brain", "title": "Answer the inbox", "steps": [{"kind": "analyze"}]}
        return None

Plug-ins register by import: `agent-ops heartbeat --plugins mypackage.triggers`, or from an installed
package through the entry point group `agent_ops.triggers`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_ops import plugins

ENTRY_POINT_GROUP = "agent_ops.triggers"

Template = Mapping[str, Any]
TriggerResult = Template | Iterable[Template] | None


@dataclass(frozen=True)
class TriggerContext:
    """What a plug-in gets: the time of this evaluation and the client, to read what it needs."""

    now: datetime
    ops: Any  # agent_ops.Ops; typed loosely so plug-ins import nothing heavy


@dataclass(frozen=True)
class PluginTrigger:
    name: str
    check: Callable[[TriggerContext], TriggerResult]
    # A template fires at most once per window unless it names its own dedupe_key.
    window: timedelta = field(default=timedelta(hours=1))

    def dedupe_key(self, template: Template, now: datetime) -> str:
        if template.get("dedupe_key"):
            return str(template["dedupe_key"])
        window_index = int(now.timestamp() // max(self.window.total_seconds(), 1))
        digest = hashlib.sha256(json.dumps(dict(template), sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"trigger-plugin:{self.name}:{window_index}:{digest}"


_REGISTRY: dict[str, PluginTrigger] = {}


def trigger(
    name: str, *, window: timedelta = timedelta(hours=1)
) -> Callable[[Callable[[TriggerContext], TriggerResult]], Callable[[TriggerContext], TriggerResult]]:
    """Register a plug-in under `name` (the last registration of a name wins)."""

    def register(check: Callable[[TriggerContext], TriggerResult]) -> Callable[[TriggerContext], TriggerResult]:
        _REGISTRY[name] = PluginTrigger(name=name, check=check, window=window)
        return check

    return register


def registered() -> list[PluginTrigger]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def unregister_all() -> None:
    _REGISTRY.clear()


def load_plugins(modules: Iterable[str] = ()) -> list[PluginTrigger]:
    """Import plug-in modules and the `agent_ops.triggers` entry points; return every registered plug-in.

    An entry point may name a module (its decorators register) or a function (registered under the
    entry point's name). A plug-in that fails to load is logged and skipped.
    """
    for name, check in plugins.load(modules, ENTRY_POINT_GROUP, "trigger"):
        _REGISTRY.setdefault(name, PluginTrigger(name=name, check=check))
    return registered()


def templates_of(result: TriggerResult) -> list[Template]:
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [result]
    return [t for t in result if t is not None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def template_to_proposal(template: Template) -> dict[str, Any]:
    """The keyword arguments of `Ops.propose` for a template (source and dedupe key added by the caller)."""
    return {
        "agent_id": template["agent_id"],
        "title": template["title"],
        "steps": list(template["steps"]),
        "description": template.get("description"),
        "metadata": template.get("metadata"),
    }
