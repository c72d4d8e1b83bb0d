"""Presence: the worker's row in ops_workers, so people and the gates see who is running and what it serves.

- At start, and whenever nothing else has written it for a while, `ops_worker_heartbeat` with the host, the
  kinds, the concurrency and the version. Claims refresh presence too, so a busy worker seldom needs a beat.
  The interval is a quarter of policy `workers.presence_seconds` (default 60, so every 15 s), re-read every
  few minutes, and never more than MAX_INTERVAL: a worker is seen well inside the presence window even
  when all its slots are busy and it claims nothing.
- When a stop is requested: one beat with `stopping: true` (the console shows it draining).
- On a clean exit: `ops_worker_sign_off` ('worker:left'). A worker that dies without signing off is forgotten
  by the heartbeat once presence_seconds have passed ('worker:lost').

A beat that fails is tried again a second later; while the database is down, that makes the presence thread
one of the callers that notice its return (outage.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence

import agent_ops
from agent_ops.client import Ops
from agent_ops.errors import OpsError, TransportError
from vps_worker.outage import Outage

log = logging.getLogger("vps_worker")

DEFAULT_PRESENCE_SECONDS = 60.0
MAX_INTERVAL = 15.0
POLICY_REFRESH_SECONDS = 300.0


class Presence:
    def __init__(self, ops: Ops, worker_id: str, kinds: Sequence[str], concurrency: int, outage: Outage) -> None:
        self._ops = ops
        self._outage = outage
        self.worker_id = worker_id
        self._kinds = list(kinds)
        self._concurrency = min(concurrency, 10000)
        self._host = socket.gethostname()[:255] or None
        self.stopping = False
        self.interval = MAX_INTERVAL
        self._lock = threading.Lock()  # a beat never lands after the sign-off (it would bring the row back)
        self._signed_off = False
        self._seen = float("-inf")  # when the database last saw us (monotonic)
        self._policy_read = float("-inf")

    def seen(self) -> None:
        """A claim got through: it refreshed our presence."""
        self._seen = time.monotonic()

    @property
    def due(self) -> bool:
        return time.monotonic() - self._seen >= self.interval

    def beat(self) -> bool:
        """One ops_worker_heartbeat, without retries (the caller's cadence is the retry); True when it got through."""
        with self._lock:
            if self._signed_off:
                return False
            return self._beat()

    def _beat(self) -> bool:
        self._refresh_interval()
        try:
            self._ops.worker_heartbeat(
                self.worker_id,
                host=self._host,
                kinds=self._kinds,
                concurrency=self._concurrency,
                version=agent_ops.__version__,
                stopping=self.stopping,
                retry=False,
            )
        except TransportError as error:
            self._outage.failed(error)
            return False
        except OpsError as error:
            self._outage.reached()
            log.warning("presence refused: %s", error)
            self._seen = time.monotonic()  # it answered: do not insist every second
            return False
        self._outage.reached()
        self._seen = time.monotonic()
        return True

    def sign_off(self) -> None:
        with self._lock:
            self._signed_off = True
            try:
                self._ops.sign_off(self.worker_id, retry=False)
            except OpsError as error:
                log.warning("could not sign off (%s); the heartbeat will forget this worker", error)

    def _refresh_interval(self) -> None:
        if self._outage.down or time.monotonic() - self._policy_read < POLICY_REFRESH_SECONDS:
            return
        try:
            policy = self._ops.call("ops_get_policy", {"key": "workers"}) or {}
            presence = float((policy.get("value") or {}).get("presence_seconds") or DEFAULT_PRESENCE_SECONDS)
        except (OpsError, TypeError, ValueError, AttributeError):
            return  # the next beat tries again; the interval stays as it was
        self._policy_read = time.monotonic()
        self.interval = min(MAX_INTERVAL, max(presence / 4, 1.0))

    def keep(self, until: threading.Event) -> None:
        """The presence thread: a beat whenever one is due, until `until` is set."""
        while not until.wait(1.0):
            try:
                if self.due:
                    self.beat()
            except Exception:
                log.exception("presence error; continuing")
