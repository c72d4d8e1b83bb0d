"""Leases and deadlines: the lease keeper, one thread looking at every run holding a slot every TICK seconds.

- **Deadline.** A run whose executor is still running at the attempt's deadline (the claim's `deadline`,
  worker_policy timeout_seconds after the claim, counted on this machine's monotonic clock from the moment
  the claim was sent, so never later than the database's) is timed out: cancelled (ctx.cancelled), abandoned
  at once (its slot frees) and reported failed, retryable, 'timed out after N s' - the words stale recovery
  uses, so the step reads the same whichever gets there first, with the usage its executor added until then.
  Its lease is not extended past the deadline.
- **Lease.** Otherwise its lease is extended every third of its length. When the database says the lease is
  lost (PT409: the mission was cancelled, the step recovered or claimed again) the run is cancelled, and
  abandoned if its executor has not returned CANCEL_GRACE seconds later. An extension that cannot reach the
  database is tried again within a few seconds, and while the database is known to be down only one run's
  extension per tick probes it. The lease is never given up on locally: downtime does not count against it
  (after a restart the database gives leases held across it one lease length from the restart), and a result
  that comes too late is refused by the attempt fence anyway.
- **Hung runs.** More than `max_hung` abandoned runs still running: `on_hung` is called (once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent_ops.client import Ops
from agent_ops.errors import Conflict, NotFound, OpsError, TransportError
from vps_worker.outage import BACKOFF_MAX, Outage
from vps_worker.runs import CANCEL_GRACE, Run, Runs, with_usage

log = logging.getLogger("vps_worker")

TICK = 0.2


def timeout_message(run: Run) -> str:
    """What stale recovery writes for an attempt past its deadline (ops_recover_stale_steps)."""
    return f"timed out after {round(run.context.timeout_seconds or 0)} s"


class LeaseKeeper(threading.Thread):
    def __init__(
        self,
        ops: Ops,
        runs: Runs,
        outage: Outage,
        lease_seconds: int | None,
        done: threading.Event,
        on_abandon: Callable[[Run, str], None],
        on_hung: Callable[[int], None],
        max_hung: int,
    ) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self._ops = ops
        self._runs = runs
        self._outage = outage
        self._lease_seconds = lease_seconds  # None: worker_policy's, per kind
        self._done = done
        self._on_abandon = on_abandon
        self._on_hung = on_hung
        self._max_hung = max_hung
        self._hung_reported = False

    def run(self) -> None:
        while not self._done.wait(TICK):
            try:
                self.tick()
            except Exception:
                log.exception("lease keeper error; continuing")

    def tick(self) -> None:
        probed = False
        for run in self._runs.active():
            now = time.monotonic()
            if run.finished:
                continue
            if run.lost is not None:
                if not run.returned and run.cancelled_at is not None and now - run.cancelled_at >= CANCEL_GRACE:
                    self._abandon(run, run.lost)
            elif now >= run.ends_at:
                if not run.returned:
                    self._time_out(run)
            elif now >= run.next_extension and not (probed and self._outage.down):
                probed = True
                self._extend(run)
        hung = self._runs.hung()
        if hung > self._max_hung and not self._hung_reported:
            self._hung_reported = True
            self._on_hung(hung)

    def _abandon(self, run: Run, why: str) -> None:
        if self._runs.abandon(run):
            self._on_abandon(run, why)

    def _time_out(self, run: Run) -> None:
        if not run.lock.acquire(blocking=False):
            return  # its result is being reported: the executor made it
        try:
            if run.returned or run.lost is not None or run.finished:
                return
            run.cancel("timed out")
        finally:
            run.lock.release()
        self._abandon(run, "timed out")
        threading.Thread(target=self._report_timeout, args=(run,), name="timeout-report", daemon=True).start()

    def _report_timeout(self, run: Run) -> None:
        step = run.step
        message = timeout_message(run)
        usage = run.context.usage  # what the executor reported spending before it ran out of time

        def send() -> str:
            return with_usage(
                lambda spent: self._ops.fail(step.id, step.attempt, message, retryable=True, usage=spent, retry=False),
                usage,
                step.id,
            ).status

        try:
            self._outage.call(
                send,
                give_up=lambda: self._done.is_set() or time.monotonic() > run.report_by,
                pause=lambda seconds: self._outage.wait(seconds, self._done),
            )
        except (Conflict, NotFound):
            pass  # recovered (timed out there too), cancelled or finished elsewhere
        except OpsError as error:
            log.warning("could not report step %s as timed out (%s); stale recovery will", step.id, error)

    def _extend(self, run: Run) -> None:
        step = run.step
        try:
            lease = self._ops.extend_lease(step.id, step.attempt, self._lease_seconds, retry=False)
        except (Conflict, NotFound) as lost:
            self._outage.reached()
            if not run.finished:
                run.cancel("lease lost")
                log.warning(
                    "lease lost; the run is cancelled and its result will be discarded",
                    extra={"fields": {"step_id": step.id, "attempt": step.attempt, "reason": lost.message}},
                )
            return
        except TransportError as error:
            self._outage.failed(error)
            run.next_extension = time.monotonic() + min(BACKOFF_MAX, run.lease_seconds / 6)
            return
        except OpsError as error:
            self._outage.reached()
            # Still ours until it expires: try again soon, without holding up the other leases.
            run.next_extension = time.monotonic() + min(5.0, run.lease_seconds / 6)
            log.debug("lease extension failed: %s", error)
            return
        self._outage.reached()
        now = time.monotonic()
        length = float(lease.lease_seconds or run.lease_seconds)
        run.lease_seconds = length
        run.lease_until = now + length
        run.next_extension = now + length / 3
