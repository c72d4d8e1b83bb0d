"""The executor loop: the only thing that runs mission steps (seed pitfall 1).

- Claims up to its free slots in one call, runs the steps on their own threads, reports each result with
  the attempt-fenced `ops_complete_step` / `ops_fail_step`, and claims again at once while there is work.
- Idle, it sleeps a jittered interval; on the direct transport a LISTEN on `ops_steps` wakes it as soon as
  a step of its kinds is queued (polling stays as the fallback).
- Extends each lease every third of its length; when an extension says the lease is lost, that run's
  result is discarded, never reported.
- Transport errors are retried with capped exponential backoff (tenacity); state changes are logged once;
  a transient error never stops the loop.
- SIGTERM/SIGINT: no new claims, running steps get a grace period, unfinished ones are handed back at once
  (`ops_release_step`, recorded as a retryable 'worker shutdown' failure) and the process exits 0.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_when_event_set, wait_exponential, wait_random

from agent_ops.client import Ops
from agent_ops.errors import Conflict, NotFound, OpsError, TransportError
from agent_ops.models import ClaimedStep
from vps_worker.breaker import CircuitBreaker
from vps_worker.builtin import json_output
from vps_worker.config import WorkerSettings
from vps_worker.executors import Executor, PermanentError, RetryableError, StepContext

log = logging.getLogger("vps_worker")
T = TypeVar("T")

# Capped exponential backoff for transport errors: 0.5 s, 1 s, 2 s … 30 s, plus up to 0.5 s of jitter.
BACKOFF = wait_exponential(multiplier=0.5, max=30) + wait_random(0, 0.5)
SHUTDOWN_REASON = "worker shutdown"


@dataclass
class RunningStep:
    step: ClaimedStep
    context: StepContext
    lease_seconds: float
    next_extension: float
    started: float = field(default_factory=time.monotonic)
    # Lost: the lease is gone (recovered, cancelled) or the step was handed back; its result is discarded.
    lost: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Worker:
    def __init__(self, ops: Ops, settings: WorkerSettings, executors: Mapping[str, Executor]) -> None:
        unknown = sorted(set(settings.kinds) - set(executors))
        if unknown:
            raise ValueError(f"WORKER_KINDS names kinds with no executor: {', '.join(unknown)}")
        self.ops = ops
        self.settings = settings
        self.executors = dict(executors)
        self.kinds = sorted(settings.kinds or executors)
        self.breaker = CircuitBreaker(ops, settings.worker_id)
        self._running: dict[int, RunningStep] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._database_down_since: float | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def run(self) -> int:
        log.info(
            "worker started",
            extra={
                "fields": {
                    "worker_id": self.settings.worker_id,
                    "kinds": ",".join(self.kinds),
                    "concurrency": self.settings.concurrency,
                    "transport": self.ops.transport.name,
                }
            },
        )
        helpers = [threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True)]
        if self.settings.listen and hasattr(self.ops.transport, "listening"):
            helpers.append(threading.Thread(target=self._listen, name="listener", daemon=True))
        for helper in helpers:
            helper.start()
        try:
            self._loop()
        finally:
            self._shutdown()
            self._done.set()
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._touch_alive()
            self.breaker.refresh()
            self._wake.clear()
            free = self.settings.concurrency - self.running_count
            kinds = self.breaker.allowed(self.kinds)
            claimed = self._claim(kinds, free) if free > 0 and kinds else []
            for step in claimed:
                self._start(step)
            if claimed:
                continue  # there may be more work: claim again at once (or wait for a free slot)
            idle = random.uniform(self.settings.poll_min, self.settings.poll_max)  # noqa: S311 - jitter only
            self._wake.wait(idle)

    # -- claiming ---------------------------------------------------------------------------------------------

    def _with_backoff(self, call: Callable[[], T], stop: threading.Event) -> T:
        """Retry transport errors with capped backoff until `stop` is set (then the last error is raised)."""

        def sleep(seconds: float) -> None:
            stop.wait(seconds)

        retrying = Retrying(
            retry=retry_if_exception_type(TransportError),
            wait=BACKOFF,
            stop=stop_when_event_set(stop),
            sleep=sleep,
            before_sleep=lambda state: self._database_down(state.outcome.exception() if state.outcome else None),
            reraise=True,
        )
        result = retrying(call)
        self._database_up()
        return result

    def _claim(self, kinds: list[str], free: int) -> list[ClaimedStep]:
        try:
            return self._with_backoff(
                lambda: self.ops.claim(
                    self.settings.worker_id, kinds, max_steps=free, lease_seconds=self.settings.lease_seconds
                ),
                self._stop,
            )
        except (TransportError, RetryError):
            return []
        except OpsError:
            log.exception("claim refused; retrying after the poll interval")
            self._stop.wait(self.settings.poll_max)
            return []

    def _database_down(self, error: BaseException | None) -> None:
        if self._database_down_since is None:
            self._database_down_since = time.monotonic()
            log.warning("database unreachable, retrying with backoff", extra={"fields": {"error": str(error)}})

    def _database_up(self) -> None:
        if self._database_down_since is not None:
            down_for = time.monotonic() - self._database_down_since
            self._database_down_since = None
            log.info("database reachable again", extra={"fields": {"down_seconds": round(down_for, 1)}})

    # -- running a step ---------------------------------------------------------------------------------------

    def _start(self, step: ClaimedStep) -> None:
        lease = step.lease_seconds or float(self.settings.lease_seconds or 1800)
        context = StepContext(
            step_id=step.id,
            mission_id=step.mission_id,
            agent_id=step.agent_id,
            kind=step.kind,
            payload=step.payload,
            inputs=step.inputs,
            attempt=step.attempt,
            max_attempts=step.max_attempts,
            deadline=step.lease_expires_at,
            logger=logging.LoggerAdapter(logging.getLogger(f"vps_worker.step.{step.kind}"), {"step_id": step.id}),
            emit=self.ops.emit_event,
        )
        running = RunningStep(
            step=step, context=context, lease_seconds=lease, next_extension=time.monotonic() + lease / 3
        )
        with self._lock:
            self._running[step.id] = running
        threading.Thread(target=self._execute, args=(running,), name=f"step-{step.id}", daemon=True).start()

    def _fields(self, running: RunningStep, **more: Any) -> dict[str, Any]:
        step = running.step
        fields: dict[str, Any] = {
            "step_id": step.id,
            "mission_id": step.mission_id,
            "kind": step.kind,
            "attempt": step.attempt,
        }
        if self.settings.log_payloads:
            fields["payload"] = step.payload
        fields.update(more)
        return fields

    def _execute(self, running: RunningStep) -> None:
        step = running.step
        log.info("step started", extra={"fields": self._fields(running)})
        outcome, error, retryable, output = "succeeded", None, True, None
        try:
            output = json_output(self.executors[step.kind](running.context))
        except PermanentError as failure:
            outcome, error, retryable = "failed", str(failure) or type(failure).__name__, False
        except RetryableError as failure:
            outcome, error = "failed", str(failure) or type(failure).__name__
        except Exception as failure:
            outcome, error = "failed", f"{type(failure).__name__}: {failure}"
            log.debug("executor raised\n%s", traceback.format_exc())
        try:
            outcome = self._report(running, output, error, retryable)
        finally:
            took = round((time.monotonic() - running.started) * 1000)
            log.info("step finished", extra={"fields": self._fields(running, duration_ms=took, outcome=outcome)})
            if outcome not in ("discarded", "released"):
                self.breaker.record(step.kind, success=error is None, error=error)
            with self._lock:
                self._running.pop(step.id, None)
            self._wake.set()

    def _report(self, running: RunningStep, output: Any, error: str | None, retryable: bool) -> str:
        """Report the result unless the lease was lost; returns the outcome for the log line."""
        step = running.step

        def send() -> str:
            if error is None:
                return self.ops.complete(step.id, step.attempt, output).status
            report = self.ops.fail(step.id, step.attempt, error, retryable=retryable)
            return "retrying" if report.status == "queued" else report.status

        with running.lock:
            if running.lost:
                return "released" if self._stop.is_set() else "discarded"
            try:
                return self._with_backoff(send, self._done)
            except (Conflict, NotFound) as refused:
                log.warning("result discarded: %s", refused.message, extra={"fields": self._fields(running)})
                return "discarded"
            except OpsError:
                log.exception("could not report step %s; its lease will expire and it will be retried", step.id)
                return "unreported"

    # -- leases -----------------------------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._done.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [r for r in self._running.values() if not r.lost and now >= r.next_extension]
            for running in due:
                self._extend(running)

    def _extend(self, running: RunningStep) -> None:
        step = running.step
        try:
            lease = self.ops.extend_lease(step.id, step.attempt, self.settings.lease_seconds)
        except (Conflict, NotFound) as lost:
            running.lost = True  # a report in flight will be refused by the fence anyway
            running.context.cancelled.set()
            log.warning(
                "lease lost; this run's result will be discarded",
                extra={"fields": self._fields(running, reason=lost.message)},
            )
            return
        except OpsError as error:
            # Still ours until it expires: try again soon.
            running.next_extension = time.monotonic() + min(5.0, running.lease_seconds / 6)
            log.debug("lease extension failed: %s", error)
            return
        running.context.deadline = lease.lease_expires_at
        running.next_extension = time.monotonic() + running.lease_seconds / 3

    # -- waking up --------------------------------------------------------------------------------------------

    def _listen(self) -> None:
        """LISTEN on ops_steps and wake the loop when a step of one of our kinds is queued."""
        wanted = set(self.kinds)
        failures = 0
        while not self._stop.is_set():
            try:
                with self.ops.transport.listening("ops_steps") as poll:  # type: ignore[attr-defined]
                    failures = 0
                    while not self._stop.is_set():
                        if wanted.intersection(poll(1.0)):
                            self._wake.set()
            except OpsError:
                failures += 1
                self._stop.wait(min(30.0, 0.5 * 2**failures))

    def _touch_alive(self) -> None:
        if self.settings.alive_file:
            Path(self.settings.alive_file).touch()

    # -- stopping ---------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        with self._lock:
            pending = len(self._running)
        if pending:
            log.info(
                "stopping: no new claims, waiting for running steps",
                extra={"fields": {"running": pending, "grace_seconds": self.settings.grace_seconds}},
            )
        deadline = time.monotonic() + self.settings.grace_seconds
        while self.running_count and time.monotonic() < deadline:
            self._wake.wait(0.1)
            self._wake.clear()
        with self._lock:
            unfinished = list(self._running.values())
        for running in unfinished:
            self._release(running)
        log.info("worker stopped", extra={"fields": {"released": len(unfinished)}})

    def _release(self, running: RunningStep) -> None:
        """Hand an unfinished step back so another worker takes it at once."""
        if not running.lock.acquire(timeout=5):
            return  # its report is in flight; the lease covers the rest
        try:
            if running.lost:
                return
            running.lost = True
            running.context.cancelled.set()
            step = running.step
            try:
                self.ops.release(step.id, step.attempt, SHUTDOWN_REASON)
                log.info("step handed back", extra={"fields": self._fields(running, outcome="released")})
            except OpsError as error:
                log.warning("could not hand back step %s (%s); it returns when its lease expires", step.id, error)
        finally:
            running.lock.release()
