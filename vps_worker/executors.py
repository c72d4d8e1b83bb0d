"""Executors: what runs a step, keyed by step kind.

    from vps_worker.executors import executor, PermanentError

    @executor("draft_tweet")
    def draft(ctx):
        if not ctx.payload.get("topic"):
            raise PermanentError("payload.topic is required")
        return {"text": f"A tweet about {ctx.payload['topic']}"}

An executor gets a `StepContext` and returns JSON-serialisable output. `RetryableError` asks for another
attempt (with backoff), `PermanentError` fails the step for good; any other exception counts as retryable.
Executors come from `@executor`, from the entry point group `agent_ops.executors`, and from
`--executors module` imports. A kind with no executor is never claimed by that worker.

Usage (tokens, cost, model) is reported through the context, as it is spent:

    @executor("summarise")
    def summarise(ctx):
        reply = call_the_model(ctx.payload["text"])
        ctx.add_usage(tokens_in=reply.prompt_tokens, tokens_out=reply.completion_tokens, model="gpt-4o-mini")
        if not reply.text:
            raise RetryableError("empty reply")  # the tokens were spent all the same: reported with the failure
        return {"summary": reply.text}

The worker sends what the attempt added up (`ctx.usage`) with its report, whatever the outcome: completed,
failed, or timed out at its deadline (what was added until then); the database stores it on the step and adds
it to the agent's spend for the day (policy `budgets`). Leave `cost_usd` out to have the database price the
tokens from policy `model_prices` by `model`. Calls add up (tokens summed, the last model kept; see
`agent_ops.models.Usage`). Usage the database refuses (a field out of range) is logged and the report goes
without it. An executor that reports nothing reports no usage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_ops import plugins
from agent_ops.models import Usage

__all__ = [
    "ENTRY_POINT_GROUP",
    "Executor",
    "PermanentError",
    "RetryableError",
    "StepContext",
    "Usage",
    "clear",
    "executor",
    "load_executors",
    "registry",
    "with_aliases",
]

ENTRY_POINT_GROUP = "agent_ops.executors"


class RetryableError(Exception):
    """The step may succeed if tried again (rate limits, timeouts, 5xx)."""


class PermanentError(Exception):
    """Trying again will not help (bad payload, 4xx, missing configuration): fail the step for good."""


@dataclass
class StepContext:
    step_id: int
    mission_id: int
    agent_id: str
    kind: str
    payload: dict[str, Any]
    inputs: dict[str, Any]
    attempt: int
    max_attempts: int
    # When this attempt must end (the claim's deadline: worker_policy timeout_seconds after it was claimed).
    # Past it the worker fails the attempt as retryable 'timed out after N s' and abandons the run.
    deadline: datetime
    logger: logging.LoggerAdapter[logging.Logger]
    emit: Callable[..., Any] = field(repr=False)
    # Set at the deadline, when the lease is lost (the mission was cancelled, the step recovered) or when the
    # worker shuts down: stop early, the result will be discarded.
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    timeout_seconds: float | None = None  # how long this attempt may run in all
    # The deadline on this machine's time.monotonic() clock (set by the worker), immune to clock skew.
    ends_at: float | None = field(default=None, repr=False)
    # What this attempt used so far (`add_usage`); reported with its result.
    usage: Usage | None = None

    def add_usage(
        self,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost_usd: float | None = None,
        model: str | None = None,
    ) -> Usage:
        """Count what a call used towards this attempt's usage (see the module's docstring); returns the total.
        Without `cost_usd` the database prices the tokens from policy `model_prices` by `model`. A wrong type or
        a negative number raises ValueError."""
        spent = Usage(tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd, model=model)
        self.usage = spent if self.usage is None else self.usage + spent
        return self.usage

    def time_left(self) -> float:
        """Seconds until the deadline (0 once it has passed): bound every wait and request by it."""
        if self.ends_at is not None:
            return max(self.ends_at - time.monotonic(), 0.0)
        return max((self.deadline - datetime.now(UTC)).total_seconds(), 0.0)

    def emit_event(self, type: str, *, tags: Iterable[str] | None = None, **fields: Any) -> Any:
        """A domain event from this step (e.g. `tweet:posted`), with the step's agent, mission and step ids."""
        return self.emit(
            type,
            self.agent_id,
            tags=list(tags) if tags is not None else None,
            mission_id=self.mission_id,
            step_id=self.step_id,
            source="worker",
            **fields,
        )


Executor = Callable[[StepContext], Any]

_REGISTRY: dict[str, Executor] = {}


def executor(kind: str) -> Callable[[Executor], Executor]:
    """Register `function` as the executor of step kind `kind` (the last registration wins)."""

    def register(function: Executor) -> Executor:
        _REGISTRY[kind] = function
        return function

    return register


def registry() -> dict[str, Executor]:
    return dict(_REGISTRY)


def clear() -> None:
    _REGISTRY.clear()


def load_executors(modules: Iterable[str] = ()) -> dict[str, Executor]:
    """Import executor modules and the `agent_ops.executors` entry points; return the registry.

    An entry point may name a module (its decorators register) or a callable (registered under the entry
    point's name). One that fails to load is logged and skipped.
    """
    for name, loaded in plugins.load(modules, ENTRY_POINT_GROUP, "executor"):
        _REGISTRY.setdefault(name, loaded)
    return registry()


def with_aliases(executors: Mapping[str, Executor], aliases: Mapping[str, str]) -> dict[str, Executor]:
    """Run step kind K with the executor of kind V, for each K=V (e.g. crawl=sleep in the demo)."""
    combined = dict(executors)
    for kind, target in aliases.items():
        if target not in executors:
            raise KeyError(f"alias {kind}={target}: no executor for {target!r}")
        combined[kind] = executors[target]
    return combined
