"""Runs: the steps this worker holds, one per claimed (step id, attempt), and the slots they take.

A run takes one of the worker's slots (WORKER_CONCURRENCY) from its claim until its executor has returned
and its result is reported, or until it is abandoned:
- at its deadline, at once (leases.py times it out);
- CANCEL_GRACE seconds after it was cancelled (lease lost: its mission was cancelled, the step recovered or
  claimed again) if its executor has not returned by then.
Python cannot kill a thread, so an abandoned run's executor may go on running; its slot is free and whatever
it returns is discarded. Abandoned runs still running CANCEL_GRACE seconds after their cancellation are
`hung`: the worker exits when there are too many (worker.py, WORKER_MAX_ABANDONED).

Runs are keyed by (step id, attempt): a step recovered and claimed again by this same worker is a new run,
and the old run can neither report nor free the new one's slot.

A run's report carries the usage its executor added (`ctx.add_usage`): `with_usage` sends it, and sends the
report again without it when the database refuses the usage, so an outcome is never lost over its usage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from agent_ops.errors import InvalidInput
from agent_ops.models import ClaimedStep, Usage
from vps_worker.executors import StepContext

log = logging.getLogger("vps_worker")
T = TypeVar("T")
RunKey = tuple[int, int]  # (step id, attempt)
# How long a cancelled executor gets to return before its run is abandoned (and, still running, counts as hung).
CANCEL_GRACE = 3.0


@dataclass
class Run:
    step: ClaimedStep
    context: StepContext
    lease_seconds: float
    next_extension: float  # when to extend the lease next (time.monotonic)
    lease_until: float  # when the lease granted last runs out, as far as this machine can tell (time.monotonic)
    ends_at: float  # the attempt's deadline (time.monotonic)
    started: float = field(default_factory=time.monotonic)
    # The executor has returned: its result is being reported (the deadline no longer applies).
    returned: bool = False
    # Why the result is discarded ('timed out', 'lease lost', 'superseded', 'handed back'); None while it counts.
    lost: str | None = None
    # Its result was reported (or given up on): nothing more to extend or hand back.
    finished: bool = False
    cancelled_at: float | None = None
    abandoned_at: float | None = None
    # Held while the result is reported, and to decide a timeout or a hand-back: one of them wins.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> RunKey:
        return (self.step.id, self.step.attempt)

    @property
    def report_by(self) -> float:
        """Until when a report is worth retrying: past the deadline and one more lease length, stale recovery
        has failed the attempt (or will at its next run) and the database would refuse it."""
        return max(self.ends_at, self.lease_until) + self.lease_seconds

    def cancel(self, why: str) -> None:
        """Discard its result and ask the executor to stop (ctx.cancelled)."""
        if self.lost is None:
            self.lost = why
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        self.context.cancelled.set()


class Runs:
    """The runs holding a slot, and the abandoned ones whose executors have not returned. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holding: dict[RunKey, Run] = {}
        self._abandoned: dict[RunKey, Run] = {}

    def add(self, run: Run) -> list[Run]:
        """Hold a slot for `run`; earlier attempts of the same step still here are cancelled and returned (their
        leases were lost long ago)."""
        with self._lock:
            older = [r for key, r in self._holding.items() if key[0] == run.step.id]
            self._holding[run.key] = run
        for earlier in older:
            earlier.cancel("superseded")
        return older

    def holding(self) -> int:
        """Slots in use."""
        with self._lock:
            return len(self._holding)

    def active(self) -> list[Run]:
        """The runs holding a slot."""
        with self._lock:
            return list(self._holding.values())

    def keys(self) -> set[RunKey]:
        with self._lock:
            return set(self._holding) | set(self._abandoned)

    def abandon(self, run: Run) -> bool:
        """Free the slot of a run whose executor is still running; False when it has returned meanwhile."""
        with self._lock:
            if self._holding.get(run.key) is not run:
                return False
            del self._holding[run.key]
            run.abandoned_at = time.monotonic()
            self._abandoned[run.key] = run
            return True

    def done(self, run: Run) -> bool:
        """The run's executor thread is done with it; True when it had been abandoned."""
        with self._lock:
            if self._holding.get(run.key) is run:
                del self._holding[run.key]
                return False
            if self._abandoned.get(run.key) is run:
                del self._abandoned[run.key]
                return True
            return False

    def hung(self) -> int:
        """Abandoned runs still running CANCEL_GRACE seconds after they were cancelled."""
        now = time.monotonic()
        with self._lock:
            return sum(
                1
                for r in self._abandoned.values()
                if r.cancelled_at is not None and now - r.cancelled_at >= CANCEL_GRACE
            )

    def abandoned(self) -> int:
        with self._lock:
            return len(self._abandoned)


def with_usage(report: Callable[[Usage | None], T], usage: Usage | None, step_id: int) -> T:
    """`report(usage)`. Usage the database refuses (PT400 naming `usage...`, e.g. a count out of range) is an
    executor's bug, not the step's outcome: logged, and the report is sent again without it."""
    try:
        return report(usage)
    except InvalidInput as refused:
        if usage is None or not refused.message.startswith("usage"):
            raise
        log.error(
            "usage refused by the database; the result is reported without it",
            extra={"fields": {"step_id": step_id, "reason": refused.message, "usage": usage.to_json()}},
        )
        return report(None)
