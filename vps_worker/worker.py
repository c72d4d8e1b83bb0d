"""The executor loop: the only thing that runs mission steps (docs/architecture.md, pitfall P1).

- Claims up to its free slots in one call, runs the steps on their own threads, reports each result with
  the attempt-fenced `ops_complete_step` / `ops_fail_step`, and claims again at once while there is work.
- Idle, it sleeps a jittered interval; on the direct transport a LISTEN on `ops_steps` wakes it as soon as
  a step of its kinds is queued (polling stays as the fallback). Any role may NOTIFY on that channel, so
  wake-ups are coalesced (at most one per NOTIFY_MIN_INTERVAL) and payloads naming other kinds are ignored.
- A step whose payload or inputs are nested too deeply to decode (rows from before the SQL limited nesting)
  fails for good at once; the steps claimed with it run as usual.
- Errors and outputs are redacted (vps_worker.redact) before they are reported: they are shown to people.
- Extends each lease every third of its length; when an extension says the lease is lost, or the lease has
  surely run out locally, that run is cancelled and its result discarded, never reported.
- Transport errors are retried with capped exponential backoff (tenacity); outages are logged once each way;
  no error stops the loop.
- SIGTERM/SIGINT: no new claims, running steps get a grace period, unfinished ones are handed back at once
  (`ops_release_step`, recorded as a retryable 'worker shutdown' failure) and the process exits 0.

Running steps are keyed by (step id, attempt): a step recovered and claimed again by this same worker is a
new run, and the old run can neither report nor untrack it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential, wait_random

from agent_ops import jsonsafe
from agent_ops.client import Ops
from agent_ops.errors import Conflict, InvalidInput, NotFound, OpsError, TransportError
from agent_ops.models import ClaimedStep
from vps_worker.breaker import CircuitBreaker
from vps_worker.builtin import json_output
from vps_worker.config import WorkerSettings
from vps_worker.executors import Executor, PermanentError, RetryableError, StepContext
from vps_worker.redact import Redactor

log = logging.getLogger("vps_worker")
T = TypeVar("T")

# Capped exponential backoff for transport errors: 0.5 s, 1 s, 2 s … 10 s, plus up to 0.5 s of jitter.
BACKOFF = wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5)
SHUTDOWN_REASON = "worker shutdown"
MAX_CLAIM = 100  # ops_claim_next_step's max_steps limit
# NOTIFY-driven wake-ups are at most this far apart: a queued step waits at most this long for a claim,
# and a flood of notifications (any role may send them) costs at most one claim per interval.
NOTIFY_MIN_INTERVAL = 0.1
RunKey = tuple[int, int]  # (step id, attempt)


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


@dataclass
class RunningStep:
    step: ClaimedStep
    context: StepContext
    lease_seconds: float
    next_extension: float
    deadline: float  # local monotonic time after which the lease has surely expired
    started: float = field(default_factory=time.monotonic)
    # lost: the lease is gone (recovered, cancelled) or the run was handed back; its result is discarded.
    lost: bool = False
    # finished: its result was reported (or given up on); nothing more to extend or hand back.
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> RunKey:
        return (self.step.id, self.step.attempt)


class Worker:
    def __init__(self, ops: Ops, settings: WorkerSettings, executors: Mapping[str, Executor]) -> None:
        unknown = sorted(set(settings.kinds) - set(executors))
        if unknown:
            raise ValueError(f"WORKER_KINDS names kinds with no executor: {', '.join(unknown)}")
        self.ops = ops
        self.settings = settings
        self.executors = dict(executors)
        self.kinds = sorted(settings.kinds or executors)
        if len(self.kinds) > 200:
            raise ValueError("a worker can run at most 200 kinds (ops_claim_next_step's limit)")
        self.breaker = CircuitBreaker(ops, settings.worker_id)
        self.redactor = Redactor.for_worker(ops.settings, settings)
        self.waker = Waker()
        self._running: dict[RunKey, RunningStep] = {}
        self._lock = threading.Lock()
        self._handoff: queue.SimpleQueue[RunningStep | None] = queue.SimpleQueue()
        self._idle_threads = 0
        self._stopping = False  # set by request_stop(), which may run in a signal handler: no locks
        self._stop = threading.Event()  # set by the main thread once it sees _stopping: stops helpers
        self._done = threading.Event()  # set when the loop has ended: stops report retries
        self._outage_lock = threading.Lock()
        self._down_since: float | None = None
        self._orphans_possible = False
        self._last_touch = 0.0

    # -- lifecycle --------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop. Safe in a signal handler: a flag and a pipe write, no locks."""
        self._stopping = True
        self.waker.wake()

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
            self._stop.set()
            self._shutdown()
            self._done.set()
            self.waker.close()
        return 0

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self._iteration()
            except Exception:
                # A bug or an unexpected failure must not kill the worker: log it, breathe, carry on.
                log.exception("unexpected error in the worker loop; continuing")
                self._sleep(self.settings.poll_max)

    def _iteration(self) -> None:
        self._touch_alive()
        self.breaker.refresh()
        self.waker.drain()
        if self._stopping:
            return
        free = self.settings.concurrency - self.running_count
        kinds = self.breaker.allowed(self.kinds)
        claimed = self._claim(kinds, min(free, MAX_CLAIM)) if free > 0 and kinds else []
        for step in claimed:
            self._start(step)
        if claimed:
            return  # there may be more work: claim again at once (or wait for a free slot)
        self._sleep(random.uniform(self.settings.poll_min, self.settings.poll_max))  # noqa: S311 - jitter only

    def _sleep(self, seconds: float) -> None:
        """An idle or backoff wait: ends early on a wake-up (completion, NOTIFY, stop)."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Look up at least every 10 s to keep the alive file fresh during long backoffs.
            woken = self.waker.wait(min(remaining, 10.0))
            self._touch_alive()
            if woken:
                return

    # -- claiming ---------------------------------------------------------------------------------------------

    def _with_backoff(self, call: Callable[[], T], give_up: Callable[[], bool], sleep: Callable[[float], None]) -> T:
        """Retry transport errors with capped backoff until `give_up()`; then the last error is raised."""
        if give_up():
            raise TransportError("stopping")
        try:
            result = call()  # the common case, without tenacity's bookkeeping
        except TransportError as first:
            self._database_down(first)
        else:
            self._database_up()
            return result

        def note_outage(state: RetryCallState) -> None:
            self._database_down(state.outcome.exception() if state.outcome else None)

        retrying = Retrying(
            retry=retry_if_exception_type(TransportError),
            wait=BACKOFF,
            stop=lambda _state: give_up(),
            sleep=sleep,
            before_sleep=note_outage,
            reraise=True,
        )
        result = retrying(call)
        self._database_up()
        return result

    def _claim(self, kinds: list[str], free: int) -> list[ClaimedStep]:
        def claim() -> list[ClaimedStep]:
            return self.ops.claim(
                self.settings.worker_id, kinds, max_steps=free, lease_seconds=self.settings.lease_seconds
            )

        try:
            claimed = self._with_backoff(claim, lambda: self._stopping, self._sleep)
        except TransportError:
            # The last claim may have committed with its answer lost: look for orphans once we are back.
            self._orphans_possible = True
            return []
        except OpsError:
            log.exception("claim refused; trying again after the poll interval")
            self._sleep(self.settings.poll_max)
            return []
        if self._orphans_possible:
            self._orphans_possible = False
            self._release_orphans(exclude={s.id for s in claimed})
        return claimed

    def _release_orphans(self, exclude: set[int]) -> None:
        """Steps the database says this worker holds but it is not running: claims whose answer was lost.
        Hand them back at once instead of letting them sit out their lease (and use up an attempt)."""
        try:
            held = [s for s in self.ops.steps(status="running", limit=1000) if s.reserved_by == self.settings.worker_id]
        except OpsError:
            self._orphans_possible = True
            return
        with self._lock:
            running = set(self._running)
        for orphan in held:
            if orphan.id in exclude or (orphan.id, orphan.attempt) in running:
                continue
            try:
                self.ops.release(orphan.id, orphan.attempt, "claim answer lost; handed back")
                log.info(
                    "orphaned claim handed back", extra={"fields": {"step_id": orphan.id, "attempt": orphan.attempt}}
                )
            except OpsError as error:
                log.warning("could not hand back orphaned step %s: %s", orphan.id, error)

    def _database_down(self, error: BaseException | None) -> None:
        with self._outage_lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("database unreachable, retrying with backoff", extra={"fields": {"error": str(error)}})

    def _database_up(self) -> None:
        with self._outage_lock:
            if self._down_since is None:
                return
            down_for = time.monotonic() - self._down_since
            self._down_since = None
        log.info("database reachable again", extra={"fields": {"down_seconds": round(down_for, 1)}})

    # -- running a step ---------------------------------------------------------------------------------------

    def _start(self, step: ClaimedStep) -> None:
        lease = float(step.lease_seconds or self.settings.lease_seconds or 1800)
        now = time.monotonic()
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
            step=step, context=context, lease_seconds=lease, next_extension=now + lease / 3, deadline=now + lease
        )
        with self._lock:
            for older in [r for key, r in self._running.items() if key[0] == step.id]:
                # An earlier attempt of this step still running here lost its lease long ago.
                older.lost = True
                older.context.cancelled.set()
            self._running[running.key] = running
            spawn = self._idle_threads == 0
            if not spawn:
                self._idle_threads -= 1
        self._handoff.put(running)
        if spawn:
            # Grow on demand: a hung executor holds its own thread, never a new step's.
            threading.Thread(target=self._executor_thread, name="executor", daemon=True).start()

    def _executor_thread(self) -> None:
        """Runs handed-off steps one after another; reused, so a step costs no thread start."""
        while True:
            running = self._handoff.get()
            if running is None:
                return
            self._execute(running)
            with self._lock:
                self._idle_threads += 1

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
        outcome = "unreported"
        error: str | None = None
        undecodable = too_deep_to_run(step)
        try:
            log.info("step started", extra={"fields": self._fields(running)})
            output: Any = None
            retryable = True
            if undecodable is not None:
                error, retryable = undecodable, False
            else:
                try:
                    output = self.redactor.json(json_output(self.executors[step.kind](running.context)))
                except PermanentError as failure:
                    error, retryable = str(failure) or type(failure).__name__, False
                except RetryableError as failure:
                    error = str(failure) or type(failure).__name__
                except BaseException as failure:  # anything an executor throws is a failed attempt
                    error = f"{type(failure).__name__}: {failure}"
                    log.debug("executor raised", exc_info=True)
                if error is not None:
                    error = self.redactor.text(error)
            outcome = self._report(running, output, error, retryable)
        finally:
            # The breaker counts this run before the slot frees: otherwise the loop can claim the next step of a
            # kind that this very failure is about to disable. Bad data is no fault of the kind's executor.
            if outcome in ("succeeded", "failed", "retrying") and undecodable is None:
                self.breaker.record(step.kind, success=outcome == "succeeded", error=error)
            with self._lock:
                if self._running.get(running.key) is running:
                    del self._running[running.key]
            self.waker.wake()
            took = round((time.monotonic() - running.started) * 1000)
            log.info("step finished", extra={"fields": self._fields(running, duration_ms=took, outcome=outcome)})

    def _report(self, running: RunningStep, output: Any, error: str | None, retryable: bool) -> str:
        """Report the result unless the run was lost; returns the outcome for the log line."""
        step = running.step
        if error is not None:
            error = error.replace("\x00", "\\0")  # Postgres text cannot hold NUL

        def send() -> str:
            if error is None:
                try:
                    return self.ops.complete(step.id, step.attempt, output).status
                except InvalidInput as refused:
                    # The database refused the output (too large, NUL, ...): a permanent failure, not a hang.
                    report = self.ops.fail(
                        step.id, step.attempt, f"output rejected: {refused.message}", retryable=False
                    )
                    return report.status
            report = self.ops.fail(step.id, step.attempt, error, retryable=retryable)
            return "retrying" if report.status == "queued" else report.status

        def give_up() -> bool:
            # Past the lease another worker owns the step; the fence would refuse this result anyway.
            return self._done.is_set() or time.monotonic() > running.deadline + 60

        with running.lock:
            if running.lost:
                return "released" if self._stopping else "discarded"
            try:
                outcome = self._with_backoff(send, give_up, self._pause)
            except (Conflict, NotFound) as refused:
                log.warning("result discarded: %s", refused.message, extra={"fields": self._fields(running)})
                outcome = "discarded"
            except OpsError as failure:
                log.error("could not report step %s: %s; it returns when its lease expires", step.id, failure)
                outcome = "unreported"
            running.finished = True
            return outcome

    def _pause(self, seconds: float) -> None:
        self._done.wait(seconds)

    # -- leases -----------------------------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        while not self._done.wait(0.2):
            try:
                now = time.monotonic()
                with self._lock:
                    runs = [r for r in self._running.values() if not r.lost and not r.finished]
                for running in runs:
                    if now > running.deadline:
                        self._lose(running, "the lease ran out before it could be extended")
                    elif now >= running.next_extension:
                        self._extend(running)
            except Exception:
                log.exception("lease keeper error; continuing")

    def _lose(self, running: RunningStep, reason: str) -> None:
        running.lost = True  # a report in flight is refused by the attempt fence anyway
        running.context.cancelled.set()
        log.warning(
            "lease lost; this run's result will be discarded", extra={"fields": self._fields(running, reason=reason)}
        )

    def _extend(self, running: RunningStep) -> None:
        step = running.step
        try:
            lease = self.ops.extend_lease(step.id, step.attempt, self.settings.lease_seconds, retry=False)
        except (Conflict, NotFound) as lost:
            if not running.finished:
                self._lose(running, lost.message)
            return
        except OpsError as error:
            # Still ours until it expires: try again soon, without holding up the other leases.
            running.next_extension = time.monotonic() + min(5.0, running.lease_seconds / 6)
            log.debug("lease extension failed: %s", error)
            return
        now = time.monotonic()
        length = float(lease.lease_seconds or running.lease_seconds)
        running.lease_seconds = length
        running.deadline = now + length
        running.next_extension = now + length / 3
        running.context.deadline = lease.lease_expires_at

    # -- waking up --------------------------------------------------------------------------------------------

    def _listen(self) -> None:
        """LISTEN on ops_steps and wake the loop when a step of one of our kinds is queued."""
        wanted = set(self.kinds)
        failures = 0
        while not self._stop.is_set():
            try:
                with self.ops.transport.listening("ops_steps") as poll:  # type: ignore[attr-defined]
                    failures = 0
                    self.waker.wake()  # steps may have been queued while we were not listening
                    while not self._stop.is_set():
                        if wanted.intersection(poll(1.0)):
                            self._wake_coalesced(poll, wanted)
            except OpsError:
                failures += 1
                self._stop.wait(min(10.0, 0.5 * 2**failures))

    def _wake_coalesced(self, poll: Callable[[float], list[str]], wanted: set[str]) -> None:
        """Wake the loop now, then at most once per NOTIFY_MIN_INTERVAL while notifications of our kinds keep
        coming: however many arrive in an interval, they make one wake-up, so one claim."""
        self.waker.wake()
        while not self._stop.wait(NOTIFY_MIN_INTERVAL):
            if not wanted.intersection(_drain(poll)):
                return
            self.waker.wake()

    def _touch_alive(self) -> None:
        if self.settings.alive_file and time.monotonic() - self._last_touch > 1.0:
            self._last_touch = time.monotonic()
            try:
                Path(self.settings.alive_file).touch()
            except OSError as error:
                log.warning("cannot touch the alive file: %s", error)

    # -- stopping ---------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        pending = self.running_count
        if pending:
            log.info(
                "stopping: no new claims, waiting for running steps",
                extra={"fields": {"running": pending, "grace_seconds": self.settings.grace_seconds}},
            )
        deadline = time.monotonic() + self.settings.grace_seconds
        while self.running_count and time.monotonic() < deadline:
            self.waker.wait(min(0.2, max(deadline - time.monotonic(), 0)))
        with self._lock:
            unfinished = [r for r in self._running.values() if not r.finished]
        # Hand everything back in parallel, each without client retries, within one overall deadline.
        handers = [threading.Thread(target=self._release, args=(r,), daemon=True) for r in unfinished]
        for thread in handers:
            thread.start()
        give_back_by = time.monotonic() + 15
        for thread in handers:
            thread.join(max(give_back_by - time.monotonic(), 0))
        log.info("worker stopped", extra={"fields": {"released": len(unfinished)}})

    def _release(self, running: RunningStep) -> None:
        """Hand an unfinished run back so another worker takes it at once."""
        if not running.lock.acquire(timeout=5):
            return  # its report is in flight; the lease covers the rest
        try:
            if running.lost or running.finished:
                return
            running.lost = True
            running.context.cancelled.set()
            step = running.step
            try:
                self.ops.release(step.id, step.attempt, SHUTDOWN_REASON, retry=False)
                log.info("step handed back", extra={"fields": self._fields(running, outcome="released")})
            except (Conflict, NotFound):
                pass  # already finished, recovered or cancelled elsewhere
            except OpsError as error:
                log.warning("could not hand back step %s (%s); it returns when its lease expires", step.id, error)
        finally:
            running.lock.release()


def _drain(poll: Callable[[float], list[str]]) -> set[str]:
    """The notifications already received, without waiting. Bounded in time: a sustained flood must not keep
    the listener reading instead of waking the loop."""
    payloads: set[str] = set()
    deadline = time.monotonic() + NOTIFY_MIN_INTERVAL
    while time.monotonic() < deadline:
        batch = poll(0)
        if not batch:
            break
        payloads.update(batch)
    return payloads


def too_deep_to_run(step: ClaimedStep) -> str | None:
    """Why the step cannot run when its payload or inputs came back cut by jsonsafe (too deep to decode)."""
    for name, value in (("payload", step.payload), ("inputs", step.inputs)):
        if jsonsafe.contains_truncated(value):
            return f"{name} nested deeper than the worker can decode ({jsonsafe.MAX_DEPTH} levels)"
    return None
