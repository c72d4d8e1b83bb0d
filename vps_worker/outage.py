"""Outages: whether the database answers, retrying until it does, and resuming everyone the moment it is back.

Every call the worker makes to the database goes through `Outage.call`. A TransportError is retried with a
short capped backoff (BACKOFF_FIRST doubling up to BACKOFF_MAX, plus jitter), so a database that comes back is
found within about BACKOFF_MAX seconds by whichever caller tries first; the first call that gets through ends
the outage and wakes every caller waiting to retry (`Outage.wait`), so the reports that piled up go out at
once. That matters: after a restart the database gives leases held across it one lease length before stale
recovery requeues their steps, and a report that arrives within it keeps a finished step from running again.

The outage is logged once each way ('database unreachable' / 'database reachable again'), whoever notices.
Any answer from the database, an error such as PT409 included, means it is reachable.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from agent_ops.errors import OpsError, TransportError

log = logging.getLogger("vps_worker")
T = TypeVar("T")

BACKOFF_FIRST = 0.25  # seconds before the first retry
BACKOFF_MAX = 2.0  # the longest pause between tries: a database back is found within about this long
BACKOFF_JITTER = 0.25  # up to this much more, so workers do not retry in step


def backoff(tries: int) -> float:
    """The pause after `tries` failed tries: 0.25 s, 0.5 s, 1 s, then 2 s, each plus up to 0.25 s of jitter."""
    pause: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(tries - 1, 0))
    return pause + random.uniform(0, BACKOFF_JITTER)  # noqa: S311 - jitter only


class Outage:
    """The database's reachability as the worker's calls find it. Thread-safe."""

    def __init__(self, on_back: Callable[[], None] = lambda: None) -> None:
        self._changed = threading.Condition()
        self._down_since: float | None = None
        self._comebacks = 0  # outages ended so far: a waiter wakes when this changes
        self._on_back = on_back

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException) -> None:
        """A call could not reach the database."""
        with self._changed:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("database unreachable, retrying", extra={"fields": {"error": str(error)}})

    def reached(self) -> None:
        """A call got an answer: an outage, if any, is over."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._changed:
            if self._down_since is None:
                return
            down_for = time.monotonic() - self._down_since
            self._down_since = None
            self._comebacks += 1
            self._changed.notify_all()
        log.info("database reachable again", extra={"fields": {"down_seconds": round(down_for, 1)}})
        self._on_back()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Sleep up to `seconds`; return early when an outage ends (another call got through) or `stop` is set."""
        until = time.monotonic() + seconds
        with self._changed:
            seen = self._comebacks
            while self._comebacks == seen and not (stop is not None and stop.is_set()):
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, 0.2) if stop is not None else left)

    def call(
        self,
        call: Callable[[], T],
        give_up: Callable[[], bool],
        pause: Callable[[float], None] | None = None,
    ) -> T:
        """`call()` until it raises no TransportError, pausing `backoff(tries)` between tries (by default with
        `wait`, which ends early when the database is back). `give_up()` is asked before every try, the first
        included: once it is true no call is made and the last TransportError is raised. Other errors (the
        database answered) are raised at once."""
        tries = 0
        last: TransportError | None = None
        while True:
            if give_up():
                raise last or TransportError("gave up before calling the database")
            try:
                result = call()
            except TransportError as error:
                self.failed(error)
                last = error
                tries += 1
                (pause or self.wait)(backoff(tries))
                continue
            except OpsError:
                self.reached()
                raise
            self.reached()
            return result
