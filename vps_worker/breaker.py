"""The circuit breaker (seed): after N consecutive failures of a kind, stop running it everywhere.

The worker disables the kind through the policy (`worker:<kind>` = {"enabled": false}), so the database
stops handing it to every worker, emits `worker:circuit_open`, and stops claiming it itself. Re-enable with
`agent-ops kinds enable <kind>`; the worker notices within a poll interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from agent_ops.client import Ops
from agent_ops.errors import OpsError

log = logging.getLogger("vps_worker.breaker")

REFRESH_SECONDS = 10.0


class CircuitBreaker:
    def __init__(self, ops: Ops, worker_id: str) -> None:
        self._ops = ops
        self._worker_id = worker_id
        self._failures: dict[str, int] = defaultdict(int)
        self._open: set[str] = set()
        self._lock = threading.Lock()
        self._thresholds: dict[str, int] = {}
        self._default_threshold = 3
        self._refreshed = 0.0

    def refresh(self) -> None:
        """Re-read thresholds and whether open kinds were re-enabled (at most every REFRESH_SECONDS).

        Kinds disabled by other workers need no tracking here: the database never hands them out.
        """
        if time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        try:
            policy = self._ops.get_policy("worker_policy").value or {}
            self._default_threshold = int(policy.get("circuit_breaker_threshold", 3))
            self._thresholds = {
                kind: int(spec["circuit_breaker_threshold"])
                for kind, spec in (policy.get("kinds") or {}).items()
                if "circuit_breaker_threshold" in spec
            }
            with self._lock:
                candidates = sorted(self._open)
            for kind in candidates:
                flag = self._ops.get_policy(f"worker:{kind}").value
                if flag is None:
                    # Opening it did not reach the database (or is still on its way): write it again.
                    self._disable(kind, self._failures[kind], None)
                    continue
                if bool(flag.get("enabled", True)):
                    with self._lock:
                        log.info("circuit closed: kind re-enabled", extra={"fields": {"kind": kind}})
                        self._open.discard(kind)
                        self._failures[kind] = 0
        except OpsError as error:
            log.debug("breaker refresh failed: %s", error)

    def allowed(self, kinds: list[str]) -> list[str]:
        with self._lock:
            return [k for k in kinds if k not in self._open]

    def record(self, kind: str, success: bool, error: str | None = None) -> None:
        with self._lock:
            if success:
                self._failures[kind] = 0
                return
            self._failures[kind] += 1
            failures = self._failures[kind]
            threshold = self._thresholds.get(kind, self._default_threshold)
            if failures < threshold or kind in self._open:
                return
            self._open.add(kind)
        self._trip(kind, failures, error)

    def _trip(self, kind: str, failures: int, error: str | None) -> None:
        log.warning("circuit open: kind disabled", extra={"fields": {"kind": kind, "failures": failures}})
        if self._disable(kind, failures, error):
            try:
                self._ops.emit_event(
                    "worker:circuit_open",
                    "system",
                    tags=[kind, "circuit_open", "warning"],
                    title=f"Circuit open: {kind} disabled after {failures} consecutive failures",
                    payload={"kind": kind, "worker_id": self._worker_id, "failures": failures, "last_error": error},
                    source="worker",
                )
            except OpsError:
                log.exception("could not emit worker:circuit_open for %s", kind)

    def _disable(self, kind: str, failures: int, error: str | None) -> bool:
        """Disable the kind for every worker; on failure it stays open here and refresh() tries again."""
        reason = f"circuit breaker: {failures} consecutive failures on {self._worker_id}"
        try:
            self._ops.set_policy(
                f"worker:{kind}", {"enabled": False, "reason": reason, "failures": failures}, self._worker_id[:200]
            )
        except OpsError:
            log.exception("could not disable %s in the policy; retrying at the next refresh", kind)
            return False
        return True
