"""The executor loop: the only thing that runs mission steps (docs/architecture.md, pitfall P1).

- Claims up to its free slots in one call, runs each step on a thread of its own, and sends the finished steps'
  results with its next claim (`ops_report_and_claim`, one round trip per step; reports.py), each fenced by
  its attempt exactly like `ops_complete_step` / `ops_fail_step` (which a result falls back to when the batch
  call fails, and which WORKER_BATCH_REPORTS=0 uses throughout). It claims again at once while there is work. Idle,
  it sleeps a jittered interval, woken early by a run finishing, a NOTIFY on `ops_steps`, the database coming
  back after an outage, or a stop (wakeups.py).
- Run-time limits: each attempt has a deadline (worker_policy timeout_seconds, in the claim). The executor
  sees it as `ctx.deadline` and `ctx.time_left()`; at the deadline the lease keeper (leases.py) cancels the
  run, reports it failed as retryable 'timed out after N s' and frees its slot at once. A run whose lease is
  lost (its mission was cancelled, the step recovered) is cancelled, and its slot frees CANCEL_GRACE seconds
  later if the executor ignores `ctx.cancelled`. Such abandoned runs may go on running - a thread cannot be
  killed - with their results discarded (runs.py).
- More abandoned runs still running than WORKER_MAX_ABANDONED (default: the concurrency): the worker stops
  claiming, lets running steps finish within the grace period and hands back the rest, signs off, and exits
  with EXIT_ABANDONED (75, EX_TEMPFAIL) so its supervisor (systemd Restart=always, Docker --restart) starts
  a clean process.
- A step whose payload or inputs are nested too deeply to decode fails for good at once; the steps claimed
  with it run as usual.
- Errors and outputs are redacted (vps_worker.redact) before they are reported: they are shown to people.
- What an executor spent (`ctx.add_usage`: tokens, cost, model) goes with its report, completed or failed, and
  with the timeout report of an attempt that ran out of time (vps_worker.executors).
- Database calls go through outage.py: retried with a short capped backoff, logged once per outage, and the
  reports that piled up go out the moment the database is back; no error stops the loop.
- Presence (presence.py): a heartbeat at start and whenever claims have not refreshed it for a while,
  `stopping` once a stop is requested, a sign-off on the way out.
- The circuit breaker is the database's, shared by every worker (ops_fail_step counts, ops_complete_step
  resets); the worker only reports. A kind whose breaker is open is simply not handed out.
- SIGTERM/SIGINT: no claim after that (steps of a claim answered after the stop are handed back unrun),
  running steps get a grace period, unfinished ones are handed back at once (`ops_release_step`, recorded as
  a retryable 'worker shutdown' failure that does not use up an attempt), sign-off, exit 0.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent_ops import jsonsafe
from agent_ops.client import Ops
from agent_ops.errors import Conflict, InvalidInput, NotFound, OpsError, TransportError
from agent_ops.models import ClaimedStep, StepReport, StepResult
from vps_worker.builtin import json_output
from vps_worker.config import WorkerSettings
from vps_worker.executors import Executor, PermanentError, RetryableError, StepContext
from vps_worker.leases import LeaseKeeper
from vps_worker.outage import Outage
from vps_worker.presence import Presence
from vps_worker.redact import Redactor
from vps_worker.reports import PendingReport, ReportQueue, answer
from vps_worker.runs import Run, Runs, with_usage
from vps_worker.wakeups import NOTIFY_MIN_INTERVAL, Listener, Waker

__all__ = ["EXIT_ABANDONED", "EXIT_STOPPED", "NOTIFY_MIN_INTERVAL", "Worker"]

log = logging.getLogger("vps_worker")

EXIT_STOPPED = 0  # a graceful stop (SIGTERM/SIGINT)
EXIT_ABANDONED = 75  # EX_TEMPFAIL: too many hung executors; the supervisor should start a clean process
SHUTDOWN_REASON = "worker shutdown"
MAX_CLAIM = 100  # ops_claim_next_step's max_steps limit
DEFAULT_TIMEOUT_SECONDS = 3600  # worker_policy's default, for a claim without one


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
        self.redactor = Redactor.for_worker(ops.settings, settings)
        self.waker = Waker()
        self.outage = Outage(on_back=self.waker.wake)
        self.presence = Presence(ops, settings.worker_id, self.kinds, settings.concurrency, self.outage)
        self.runs = Runs()
        self.reports = ReportQueue()
        self.max_abandoned = settings.concurrency if settings.max_abandoned is None else settings.max_abandoned
        self._handoff: queue.SimpleQueue[Run | None] = queue.SimpleQueue()
        self._threads_lock = threading.Lock()
        self._idle_threads = 0
        self._stopping = False  # set by request_stop(), which may run in a signal handler: no locks
        self._exit_code = EXIT_STOPPED
        self._stop = threading.Event()  # set by the main thread once it sees _stopping: stops the listener
        self._done = threading.Event()  # set when the worker has finished: stops the keeper, presence, reports
        self._orphans_possible = False
        self._last_touch = 0.0
        self.keeper = LeaseKeeper(
            ops,
            self.runs,
            self.outage,
            settings.lease_seconds,
            done=self._done,
            on_abandon=self._abandoned,
            on_hung=self._too_many_hung,
            max_hung=self.max_abandoned,
        )

    # -- lifecycle --------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop. Safe in a signal handler: a flag and a pipe write, no locks."""
        self._stopping = True
        self.waker.wake()

    def run(self) -> int:
        """Run until a stop; returns the exit status (EXIT_STOPPED, or EXIT_ABANDONED)."""
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
        self.presence.beat()
        helpers: list[threading.Thread] = [
            self.keeper,
            threading.Thread(target=self.presence.keep, args=(self._done,), name="presence", daemon=True),
        ]
        if self.settings.listen and self.ops.transport.supports_listen:
            helpers.append(Listener(self.ops.transport, self.kinds, self.waker, self._stop))
        for helper in helpers:
            helper.start()
        try:
            self._loop()
        finally:
            self.reports.close()  # the main loop sends no more: each result goes out on its own
            self._stop.set()
            self.presence.stopping = True
            self.presence.beat()
            self._shutdown()
            self.presence.sign_off()
            self._done.set()
            self.waker.close()
        return self._exit_code

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
        self.waker.drain()
        if self._stopping:
            return
        self.reports.gather(self.runs.holding)
        free = self.settings.concurrency - self.runs.holding()
        claimed = self._claim(min(max(free, 0), MAX_CLAIM)) if free > 0 or len(self.reports) else []
        if claimed and self._stopping:
            self._hand_back_unstarted([step for step, _ in claimed])
            return
        for step, claimed_at in claimed:
            self._start(step, claimed_at)
        if claimed:
            return  # there may be more work: claim again at once (or wait for a free slot)
        self._sleep(random.uniform(self.settings.poll_min, self.settings.poll_max))  # noqa: S311 - jitter only

    def _sleep(self, seconds: float) -> None:
        """An idle or backoff wait: ends early on a wake-up (a run finished, NOTIFY, the database back, stop)."""
        until = time.monotonic() + seconds
        while not self._stopping:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            # Look up at least every 10 s to keep the alive file fresh during long waits.
            woken = self.waker.wait(min(remaining, 10.0))
            self._touch_alive()
            if woken:
                return

    # -- claiming ---------------------------------------------------------------------------------------------

    def _claim(self, free: int) -> list[tuple[ClaimedStep, float]]:
        """Up to `free` steps, each with the moment its claim was sent (time.monotonic): the deadline counts
        from there. Finished steps' results waiting in the report queue go with it, and the claim also asks for
        the slots they free. Retried through outages until a stop is requested; no claim is sent after that.
        While the database is unreachable the retries are presence beats, not claims: a claim waiting for a
        connection could reach the database after a stop, so one is sent only to a database that has just
        answered. Results whose batch call failed are sent by their own threads (reports.py)."""
        sent = time.monotonic()
        pending: list[PendingReport] = self.reports.take()

        def give_back() -> None:
            nonlocal pending
            answer(pending, None)
            pending = []

        def claim() -> list[ClaimedStep]:
            nonlocal sent, pending
            if self.outage.down:
                give_back()
                self.presence.beat()
                if self.outage.down:
                    raise TransportError("the database is still unreachable")
            if self._stopping:
                give_back()
                return []
            sent = time.monotonic()
            lease = self.settings.lease_seconds
            try:
                if pending:
                    sending, pending = pending, []
                    return self._report_and_claim(sending, free, lease)
                if free <= 0:
                    return []
                return self.ops.claim(self.settings.worker_id, self.kinds, max_steps=free, lease_seconds=lease)
            except TransportError:
                # It may have committed with its answer lost: look for orphans once we are back.
                self._orphans_possible = True
                raise

        try:
            claimed = self.outage.call(claim, give_up=lambda: self._stopping, pause=self._sleep)
        except TransportError:
            return []  # stopping
        except OpsError:
            log.exception("claim refused; trying again after the poll interval")
            self._sleep(self.settings.poll_max)
            return []
        finally:
            give_back()
        self.presence.seen()
        if self._orphans_possible:
            self._orphans_possible = False
            self._release_orphans(exclude={s.id for s in claimed})
        return [(step, sent) for step in claimed]

    def _report_and_claim(self, pending: list[PendingReport], free: int, lease: int | None) -> list[ClaimedStep]:
        """Send the waiting results with a claim for the free slots and those they free. Every result is answered
        on the way out, with None when it must go alone (reports.py)."""
        want = min(free + len(pending), MAX_CLAIM)
        try:
            answers, steps, busy = self.ops.report_and_claim(
                self.settings.worker_id, [p.result for p in pending], self.kinds, want, lease
            )
        except BaseException as failed:
            # Whatever went wrong, each result goes out alone (a repeat of one that committed is a duplicate).
            answer(pending, None)
            if isinstance(failed, TransportError) or not isinstance(failed, OpsError):
                raise
            # One result the database refuses (an output too large ...) refuses the whole call; the claim goes
            # on without them.
            log.info("batch report refused (%s); sending those results one by one", failed.message)
            if free <= 0:
                return []
            return self.ops.claim(self.settings.worker_id, self.kinds, max_steps=free, lease_seconds=lease)
        answer(pending, answers)
        if busy and len(steps) < want:
            # A limited kind's lock was busy (that call never waits with reports in it): now that the reports
            # are in, wait for it with a plain claim.
            steps += self.ops.claim(
                self.settings.worker_id, self.kinds, max_steps=want - len(steps), lease_seconds=lease
            )
        return steps

    def _release_orphans(self, exclude: set[int]) -> None:
        """Steps the database says this worker holds but it is not running: claims whose answer was lost.
        Hand them back at once instead of letting them sit out their lease (and use up an attempt)."""
        try:
            held = [s for s in self.ops.steps(status="running", limit=1000) if s.reserved_by == self.settings.worker_id]
        except OpsError:
            self._orphans_possible = True
            return
        running = self.runs.keys()
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

    def _hand_back_unstarted(self, steps: list[ClaimedStep]) -> None:
        """Steps of a claim that was answered after the stop was requested: handed back without running."""
        for step in steps:
            try:
                self.ops.release(step.id, step.attempt, SHUTDOWN_REASON, retry=False)
                log.info("claimed as the stop came; handed back unrun", extra={"fields": {"step_id": step.id}})
            except OpsError as error:
                log.warning("could not hand back step %s (%s); it returns when its lease expires", step.id, error)

    # -- running a step ---------------------------------------------------------------------------------------

    def _start(self, step: ClaimedStep, claimed_at: float) -> None:
        timeout = float(step.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)
        lease = float(step.lease_seconds or self.settings.lease_seconds or 1800)
        ends_at = claimed_at + timeout
        context = StepContext(
            step_id=step.id,
            mission_id=step.mission_id,
            agent_id=step.agent_id,
            kind=step.kind,
            payload=step.payload,
            inputs=step.inputs,
            attempt=step.attempt,
            max_attempts=step.max_attempts,
            deadline=step.deadline or datetime.now(UTC) + timedelta(seconds=timeout),
            logger=logging.LoggerAdapter(logging.getLogger(f"vps_worker.step.{step.kind}"), {"step_id": step.id}),
            emit=self.ops.emit_event,
            timeout_seconds=timeout,
            ends_at=ends_at,
        )
        run = Run(
            step=step,
            context=context,
            lease_seconds=lease,
            next_extension=time.monotonic() + lease / 3,
            lease_until=claimed_at + lease,
            ends_at=ends_at,
        )
        self.runs.add(run)
        with self._threads_lock:
            spawn = self._idle_threads == 0
            if not spawn:
                self._idle_threads -= 1
        self._handoff.put(run)
        if spawn:
            # Grow on demand: a hung executor holds its own thread, never a new step's.
            threading.Thread(target=self._executor_thread, name="executor", daemon=True).start()

    def _executor_thread(self) -> None:
        """Runs handed-off steps one after another; reused, so a step costs no thread start."""
        while True:
            run = self._handoff.get()
            if run is None:
                return
            self._execute(run)
            with self._threads_lock:
                self._idle_threads += 1

    def _fields(self, run: Run, **more: Any) -> dict[str, Any]:
        step = run.step
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

    def _execute(self, run: Run) -> None:
        outcome = "unreported"
        try:
            if log.isEnabledFor(logging.DEBUG):  # one INFO line per step ("step finished") is enough
                log.debug("step started", extra={"fields": self._fields(run)})
            output, error, retryable = self._call_executor(run)
            outcome = self._report(run, output, error, retryable)
        finally:
            was_abandoned = self.runs.done(run)
            self.waker.wake()
            took = round((time.monotonic() - run.started) * 1000)
            if was_abandoned:
                log.warning(
                    "abandoned run returned; its result is discarded",
                    extra={"fields": self._fields(run, duration_ms=took, outcome=outcome)},
                )
            else:
                log.info("step finished", extra={"fields": self._fields(run, duration_ms=took, outcome=outcome)})

    def _call_executor(self, run: Run) -> tuple[Any, str | None, bool]:
        """(output, error, retryable): what the executor made of the step, redacted."""
        step = run.step
        undecodable = too_deep_to_run(step)
        if undecodable is not None:
            return None, undecodable, False
        error: str | None = None
        retryable = True
        output: Any = None
        try:
            output = self.redactor.json(json_output(self.executors[step.kind](run.context)))
        except PermanentError as failure:
            error, retryable = str(failure) or type(failure).__name__, False
        except RetryableError as failure:
            error = str(failure) or type(failure).__name__
        except BaseException as failure:  # anything an executor throws is a failed attempt
            error = f"{type(failure).__name__}: {failure}"
            log.debug("executor raised", exc_info=True)
        if error is not None:
            error = self.redactor.text(error)
        return output, error, retryable

    def _report(self, run: Run, output: Any, error: str | None, retryable: bool) -> str:
        """Report the result unless the run was lost; returns the outcome for the log line. Retried through
        an outage until the worker is done or the report could no longer be accepted (`Run.report_by`)."""
        step = run.step
        run.returned = True
        if error is not None:
            error = error.replace("\x00", "\\0")  # Postgres text cannot hold NUL

        usage = run.context.usage  # what the executor spent, reported whatever the outcome

        def fail(message: str, retryable: bool) -> StepReport:
            return with_usage(
                lambda spent: self.ops.fail(step.id, step.attempt, message, retryable, usage=spent, retry=False),
                usage,
                step.id,
            )

        def send() -> str:
            if error is None:
                try:
                    return with_usage(
                        lambda spent: self.ops.complete(step.id, step.attempt, output, usage=spent, retry=False),
                        usage,
                        step.id,
                    ).status
                except InvalidInput as refused:
                    # The database refused the output (too large, NUL, ...): a permanent failure, not a hang.
                    return fail(f"output rejected: {refused.message}", False).status
            report = fail(error, retryable)
            return "retrying" if report.status == "queued" else report.status

        with run.lock:
            if run.lost is not None:
                return {"handed back": "released", "timed out": "timed out"}.get(run.lost, "discarded")
            batched = self._report_with_claim(run, StepResult(step.id, step.attempt, output, error, retryable, usage))
            if batched is not None:
                run.finished = True
                return batched
            try:
                outcome = self.outage.call(
                    send,
                    give_up=lambda: self._done.is_set() or time.monotonic() > run.report_by,
                    pause=lambda seconds: self.outage.wait(seconds, self._done),
                )
            except (Conflict, NotFound) as refused:
                log.warning("result discarded: %s", refused.message, extra={"fields": self._fields(run)})
                outcome = "discarded"
            except OpsError as failure:
                log.error("could not report step %s: %s; stale recovery will return it", step.id, failure)
                outcome = "unreported"
            run.finished = True
            return outcome

    def _report_with_claim(self, run: Run, result: StepResult) -> str | None:
        """Hand the result to the main loop's next claim and wait for its answer: the outcome, or None when it
        must be sent alone (batching off or stopped, or the batch call failed)."""
        if not self.settings.batch_reports:
            return None
        pending = self.reports.submit(result)
        if pending is None:
            return None
        self.waker.wake()
        got = pending.wait()
        if isinstance(got, (Conflict, NotFound)):
            log.warning("result discarded: %s", got.message, extra={"fields": self._fields(run)})
            return "discarded"
        if not isinstance(got, StepReport):
            return None
        return "retrying" if result.error is not None and got.status == "queued" else got.status

    # -- abandoned runs ---------------------------------------------------------------------------------------

    def _abandoned(self, run: Run, why: str) -> None:
        """The lease keeper freed a run's slot (its executor has not returned)."""
        self.waker.wake()
        took = round(time.monotonic() - run.started, 1)
        log.warning(
            "run abandoned: its slot is free again; whatever it returns will be discarded",
            extra={"fields": self._fields(run, reason=why, running_seconds=took, abandoned=self.runs.abandoned())},
        )

    def _too_many_hung(self, hung: int) -> None:
        """More abandoned runs are still running than WORKER_MAX_ABANDONED: drain and exit for a restart."""
        self._exit_code = EXIT_ABANDONED
        log.error(
            "too many hung executors: stopping so the supervisor starts a clean process",
            extra={"fields": {"hung": hung, "max_abandoned": self.max_abandoned, "exit_code": EXIT_ABANDONED}},
        )
        self.request_stop()

    # -- alive file -------------------------------------------------------------------------------------------

    def _touch_alive(self) -> None:
        if self.settings.alive_file and time.monotonic() - self._last_touch > 1.0:
            self._last_touch = time.monotonic()
            try:
                Path(self.settings.alive_file).touch()
            except OSError as error:
                log.warning("cannot touch the alive file: %s", error)

    # -- stopping ---------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        pending = self.runs.holding()
        if pending:
            log.info(
                "stopping: no new claims, waiting for running steps",
                extra={"fields": {"running": pending, "grace_seconds": self.settings.grace_seconds}},
            )
        until = time.monotonic() + self.settings.grace_seconds
        while self.runs.holding() and time.monotonic() < until:
            self.waker.wait(min(0.2, max(until - time.monotonic(), 0)))
        unfinished = [r for r in self.runs.active() if not r.finished]
        # Hand everything back in parallel, each without client retries, within one overall deadline.
        handers = [threading.Thread(target=self._release, args=(r,), daemon=True) for r in unfinished]
        for thread in handers:
            thread.start()
        give_back_by = time.monotonic() + 15
        for thread in handers:
            thread.join(max(give_back_by - time.monotonic(), 0))
        fields: dict[str, Any] = {"released": len(unfinished), "abandoned_still_running": self.runs.abandoned()}
        if self._exit_code:
            fields["exit_code"] = self._exit_code
        log.info("worker stopped", extra={"fields": fields})

    def _release(self, run: Run) -> None:
        """Hand an unfinished run back so another worker takes it at once."""
        if not run.lock.acquire(timeout=5):
            return  # its report is in flight; the lease covers the rest
        try:
            if run.lost is not None or run.finished:
                return
            run.cancel("handed back")
            step = run.step
            try:
                self.ops.release(step.id, step.attempt, SHUTDOWN_REASON, retry=False)
                log.info("step handed back", extra={"fields": self._fields(run, outcome="released")})
            except (Conflict, NotFound):
                pass  # already finished, recovered or cancelled elsewhere
            except OpsError as error:
                log.warning("could not hand back step %s (%s); it returns when its lease expires", step.id, error)
        finally:
            run.lock.release()


def too_deep_to_run(step: ClaimedStep) -> str | None:
    """Why the step cannot run when its payload or inputs came back cut by jsonsafe (too deep to decode)."""
    for name, value in (("payload", step.payload), ("inputs", step.inputs)):
        if jsonsafe.contains_truncated(value):
            return f"{name} nested deeper than the worker can decode ({jsonsafe.MAX_DEPTH} levels)"
    return None
