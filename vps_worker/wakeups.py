"""Wake-ups: what ends the worker loop's idle wait early.

- `Waker`: a self-pipe any thread or a signal handler can poke (a run finished, a stop was requested, the
  database is back).
- `Listener`: on a transport that `supports_listen` (the direct one), a thread LISTENing on `ops_steps` that
  pokes the waker as soon as a step of the worker's kinds is queued; polling stays as the fallback. Any role
  may NOTIFY on that channel, so wake-ups are coalesced (at most one per NOTIFY_MIN_INTERVAL) and payloads
  naming other kinds are ignored. A lost LISTEN connection is opened again within about BACKOFF_MAX
  seconds (outage.py), and the loop is woken then: steps may have been queued while nobody listened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Iterable

from agent_ops.errors import OpsError
from agent_ops.transports import Poll, Transport
from vps_worker.outage import backoff

log = logging.getLogger("vps_worker")

CHANNEL = "ops_steps"
# NOTIFY-driven wake-ups are at most this far apart: a queued step waits at most this long for a claim,
# and a flood of notifications (any role may send them) costs at most one claim per interval.
NOTIFY_MIN_INTERVAL = 0.1


class Waker:
    """Wakes the main loop from any thread or a signal handler: a self-pipe, so waking takes no lock."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe means it is already awake
            os.write(self._write, b"!")

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, or until woken (True); pending wake-ups are consumed."""
        ready, _, _ = select.select([self._read], [], [], max(timeout, 0))
        if ready:
            self.drain()
        return bool(ready)

    def drain(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: nothing (more) to read
            while os.read(self._read, 4096):
                pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class Listener(threading.Thread):
    """LISTEN on ops_steps and wake the loop when a step of one of `kinds` is queued, until `stop` is set."""

    def __init__(self, transport: Transport, kinds: Iterable[str], waker: Waker, stop: threading.Event) -> None:
        super().__init__(name="listener", daemon=True)
        self._transport = transport
        self._wanted = set(kinds)
        self._waker = waker
        self._stop = stop

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with self._transport.listening(CHANNEL) as poll:
                    failures = 0
                    self._waker.wake()  # steps may have been queued while we were not listening
                    while not self._stop.is_set():
                        if self._wanted.intersection(poll(1.0)):
                            self._wake_coalesced(poll)
            except OpsError:
                failures += 1
            except Exception:  # a bug must not end the wake-ups for good: polling alone would be slow
                log.exception("listener error; listening again")
                failures += 1
            self._stop.wait(backoff(failures))

    def _wake_coalesced(self, poll: Poll) -> None:
        """Wake the loop now, then at most once per NOTIFY_MIN_INTERVAL while notifications of our kinds keep
        coming: however many arrive in an interval, they make one wake-up, so one claim."""
        self._waker.wake()
        while not self._stop.wait(NOTIFY_MIN_INTERVAL):
            if not self._wanted.intersection(drain(poll)):
                return
            self._waker.wake()


def drain(poll: Poll) -> set[str]:
    """The notifications already received, without waiting. Bounded in time: a sustained flood must not keep
    the listener reading instead of waking the loop."""
    payloads: set[str] = set()
    until = time.monotonic() + NOTIFY_MIN_INTERVAL
    while time.monotonic() < until:
        batch = poll(0)
        if not batch:
            break
        payloads.update(batch)
    return payloads
