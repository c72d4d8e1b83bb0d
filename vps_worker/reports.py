"""Reports that ride with the next claim: one round trip per step instead of two.

An executor thread whose step has finished hands its result to the ReportQueue and waits for the answer; the
worker's main loop, woken at once, sends every waiting result with its next claim (`Ops.report_and_claim`:
one transaction, one round trip), claiming for the slots those results are about to free. Results that
arrive while a claim is in flight go with the next one, so a report waits at most one round trip, plus up to
FLUSH_WINDOW (10 ms) while the loop gathers the steps still running (none running: it sends at once).

Each report stays exactly as fenced and as durable as a single `ops_complete_step` / `ops_fail_step`: the
executor thread holds its run until its own answer comes back, and a step is only reported once its executor
has returned. A crash loses what it lost before: results not yet committed come back through stale recovery
(at-least-once with attempt fencing).

When the batch call fails in any way (an outage, a lost answer, an output or usage the database refuses for
one report, which would refuse the whole call), every result in it is answered `None`: its thread then
sends it alone as before (`Ops.complete` / `Ops.fail`, retried through outages), where a repeat of a report
that did commit is answered as a duplicate. The same happens to results handed in after the main loop has
stopped sending (a stop was requested): `submit` returns None and the thread reports on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent_ops.errors import OpsError
from agent_ops.models import StepReport, StepResult

# How long a thread waits for the main loop before it sends its report alone (a repeat is a duplicate).
ANSWER_TIMEOUT = 30.0
MAX_BATCH = 100  # ops_report_steps' limit
# How long the main loop, with results waiting, waits for the steps still running to finish, so that steps
# finishing together go out in one call (at 30 ms of round trip, without it the slots split into two groups
# that alternate, each call carrying half of them).
FLUSH_WINDOW = 0.010


@dataclass
class PendingReport:
    result: StepResult
    answered: threading.Event = field(default_factory=threading.Event)
    # StepReport or the Conflict / NotFound for this report; None: send it alone.
    answer: StepReport | OpsError | None = None

    def wait(self) -> StepReport | OpsError | None:
        self.answered.wait(ANSWER_TIMEOUT)
        return self.answer


class ReportQueue:
    """Results waiting for the main loop's next claim. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiting: list[PendingReport] = []
        self._open = True

    def submit(self, result: StepResult) -> PendingReport | None:
        """Queue a result; None once the queue is closed (the caller reports on its own)."""
        with self._lock:
            if not self._open:
                return None
            pending = PendingReport(result)
            self._waiting.append(pending)
            self._arrived.notify_all()
            return pending

    def gather(self, holding: Callable[[], int], window: float | None = None) -> None:
        """With results waiting, wait until every slot in use has its result waiting (nothing is still running)
        or `window` seconds have passed: a result waits at most that long for company. Without results waiting,
        returns at once."""
        until = time.monotonic() + (FLUSH_WINDOW if window is None else window)
        with self._arrived:
            while self._waiting and len(self._waiting) < min(holding(), MAX_BATCH):
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._arrived.wait(left)

    def take(self) -> list[PendingReport]:
        """The results to send now (at most one call's worth)."""
        with self._lock:
            taken, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def close(self) -> None:
        """No more batching: whatever waits is sent by its own thread."""
        with self._lock:
            self._open = False
            waiting, self._waiting = self._waiting, []
        answer(waiting, None)


def answer(pending: Sequence[PendingReport], answers: Sequence[StepReport | OpsError] | None) -> None:
    """Wake each waiting thread with its answer, or with None (send it alone): all of them, whatever `answers`
    holds, so that no thread waits for an answer that never comes."""
    for i, item in enumerate(pending):
        if not item.answered.is_set():
            item.answer = answers[i] if answers is not None and i < len(answers) else None
            item.answered.set()
