"""/metrics in the Prometheus text format: one `ops_metrics()` call per scrape, turned into metric families.

Nothing is counted in this process: every value comes from the database (ops_metrics(), see
supabase/migrations/20261203003100_ops_metrics_read.sql), so any number of `agent-ops serve` processes show
the same numbers and a restart loses nothing. Counters and the step-duration histogram come from the
heartbeat's minute rollup and lag the clock by one to two minutes; gauges are read at the scrape. When the
database cannot be reached, the scrape still answers, with `agent_ops_up 0` and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agent_ops.client import Ops
from agent_ops.errors import OpsError
from agent_ops.models import Metrics

__all__ = ["CONTENT_TYPE", "OpsCollector", "metric_families", "registry_for", "scrape"]

log = logging.getLogger("agent_ops.metrics")

# The classic text format every Prometheus reads; the names here are plain ASCII, so the body is the same in
# every version prometheus_client writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BREAKER_STATES = ("closed", "open", "half_open")
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "dead")


def _gauge(name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def _histogram(kinds: list[dict[str, Any]], bounds: list[float]) -> Metric:
    family = HistogramMetricFamily(
        "agent_ops_step_duration_seconds",
        "Run time of the final attempt of each step that finished (succeeded or failed), per kind, from the "
        "heartbeat's minute rollup",
        labels=["kind"],
    )
    for kind in kinds:
        duration = kind.get("duration") or {}
        cumulative = [float(c) for c in duration.get("le") or []]
        cumulative += [cumulative[-1] if cumulative else 0.0] * (len(bounds) - len(cumulative))
        count = float(duration.get("count") or 0)
        buckets = [(_bound(b), c) for b, c in zip(bounds, cumulative, strict=False)] + [("+Inf", count)]
        family.add_metric([kind["kind"]], buckets, sum_value=float(duration.get("sum") or 0))
    return family


def _bound(value: float) -> str:
    return repr(float(value))


def metric_families(snapshot: Metrics) -> Iterator[Metric]:
    """Every family of /metrics from one `ops_metrics()` snapshot (apart from agent_ops_up)."""
    kinds = snapshot.kinds
    by_kind = [((k["kind"],), k) for k in kinds]
    yield _gauge(
        "agent_ops_system_enabled", "1 while the kill switch lets the loop run", [], [((), snapshot.system_enabled)]
    )

    # The queue and what runs.
    yield _gauge(
        "agent_ops_queue_depth",
        "Queued steps per kind (ready or waiting for a retry's backoff)",
        ["kind"],
        ((labels, k["queued"]) for labels, k in by_kind),
    )
    yield _gauge(
        "agent_ops_queue_ready",
        "Queued steps per kind whose run_after has come",
        ["kind"],
        ((labels, k["ready"]) for labels, k in by_kind),
    )
    yield _gauge(
        "agent_ops_queue_oldest_age_seconds",
        "How long the oldest ready step of the kind has waited (0: none)",
        ["kind"],
        ((labels, float(k["oldest_ready_age_seconds"])) for labels, k in by_kind),
    )
    yield _gauge(
        "agent_ops_steps_running", "Running steps per kind", ["kind"], ((labels, k["running"]) for labels, k in by_kind)
    )
    yield _gauge(
        "agent_ops_worker_steps_running",
        "Running steps per worker (live or not)",
        ["worker"],
        (((worker,), n) for worker, n in sorted(snapshot.running_by_worker.items())),
    )

    # Workers.
    yield _gauge(
        "agent_ops_workers_live", "Workers seen within workers.presence_seconds", [], [((), len(snapshot.workers))]
    )
    yield _gauge(
        "agent_ops_kind_workers_live",
        "Live workers that serve the kind",
        ["kind"],
        ((labels, k["live_workers"]) for labels, k in by_kind),
    )
    yield _gauge(
        "agent_ops_worker_last_seen_seconds",
        "Seconds since each live worker was last seen",
        ["worker"],
        (((w["worker_id"],), float(w["seen_seconds_ago"])) for w in snapshot.workers),
    )

    # Breakers, switches and stalls.
    yield _gauge(
        "agent_ops_kind_enabled",
        "1 unless the kind is disabled (by a person, the circuit breaker or the gates)",
        ["kind"],
        ((labels, k["enabled"]) for labels, k in by_kind),
    )
    yield _gauge(
        "agent_ops_breaker_state",
        "The circuit breaker's state per kind: 1 for the current one",
        ["kind", "state"],
        (((k["kind"], state), k["breaker"]["state"] == state) for k in kinds for state in BREAKER_STATES),
    )
    yield _gauge(
        "agent_ops_breaker_consecutive_failures",
        "Failed steps of the kind in a row (each step once)",
        ["kind"],
        ((labels, k["breaker"]["consecutive_failures"]) for labels, k in by_kind),
    )
    stalled = [k for k in kinds if k.get("stalled")]
    yield _gauge("agent_ops_stalled_kinds", "Kinds whose queue is stalled now", [], [((), len(stalled))])
    yield _gauge(
        "agent_ops_queue_stalled_seconds",
        "How long each stalled kind has been stalled, with the reason",
        ["kind", "reason"],
        (((k["kind"], k["stalled"]["reason"]), float(k["stalled"]["stalled_seconds"])) for k in stalled),
    )

    # What finished: counters and the run-time histogram from the rollup.
    steps = CounterMetricFamily(
        "agent_ops_steps",
        "Steps per kind and outcome: succeeded, failed (for good), retried (attempts that "
        "went back to the queue), from the heartbeat's minute rollup",
        labels=["kind", "outcome"],
    )
    for k in kinds:
        for outcome in ("succeeded", "failed", "retried"):
            steps.add_metric([k["kind"], outcome], float(k[outcome]))
    yield steps
    yield _histogram(kinds, snapshot.buckets)

    # The heartbeat.
    beat = snapshot.heartbeat
    last = beat.get("last") or None
    yield CounterMetricFamily("agent_ops_heartbeat_runs", "Heartbeats run (from the rollup)", value=beat["runs"])
    yield CounterMetricFamily(
        "agent_ops_heartbeat_failures", "Heartbeats that had an error (from the rollup)", value=beat["failures"]
    )
    yield CounterMetricFamily(
        "agent_ops_heartbeat_duration_seconds",
        "Time spent in heartbeats (from the rollup)",
        value=beat["duration_ms_sum"] / 1000,
    )
    yield _gauge(
        "agent_ops_heartbeat_late",
        "1 when the last heartbeat is older than alerts.heartbeat_age_seconds (or none ran)",
        [],
        [((), beat["late"])],
    )
    if last is not None:
        yield _gauge(
            "agent_ops_heartbeat_age_seconds",
            "Seconds since the last heartbeat started",
            [],
            [((), float(beat["age_seconds"]))],
        )
        yield _gauge(
            "agent_ops_heartbeat_last_duration_seconds",
            "How long the last heartbeat took",
            [],
            [((), (last.get("duration_ms") or 0) / 1000)],
        )
        yield _gauge(
            "agent_ops_heartbeat_last_ok",
            "1 when the last heartbeat had no error",
            [],
            [((), last["status"] == "succeeded")],
        )

    # Notifications.
    notes = snapshot.notifications
    outbox = notes.get("outbox") or {}
    yield _gauge(
        "agent_ops_notifications",
        "Rows of the notification outbox by status",
        ["status"],
        (((status,), outbox.get(status, 0)) for status in NOTIFICATION_STATUSES),
    )
    yield _gauge(
        "agent_ops_notifications_retrying",
        "Pending notifications whose earlier attempts failed",
        [],
        [((), notes.get("retrying", 0))],
    )
    yield CounterMetricFamily(
        "agent_ops_notifications_sent", "Notifications delivered (from the rollup)", value=notes.get("sent_total", 0)
    )
    yield CounterMetricFamily(
        "agent_ops_notifications_dead",
        "Notifications given up on: dead letters (from the rollup)",
        value=notes.get("dead_total", 0),
    )

    # How fresh the rollup is.
    lag = snapshot.rollup.get("lag_seconds")
    if lag is not None:
        yield _gauge(
            "agent_ops_metrics_rollup_lag_seconds",
            "Seconds since the end of the last minute the rollup closed",
            [],
            [((), float(lag))],
        )


class OpsCollector(Collector):
    """A prometheus_client collector that reads `ops_metrics()` once per scrape."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self.ops.metrics()
        except OpsError as error:
            log.warning("/metrics: ops_metrics() failed: %s", error)
            yield _gauge("agent_ops_up", "1 when the database answered ops_metrics()", [], [((), 0)])
            return
        yield _gauge("agent_ops_up", "1 when the database answered ops_metrics()", [], [((), 1)])
        yield from metric_families(snapshot)


def registry_for(ops: Ops) -> CollectorRegistry:
    """A registry of its own (no process or Python metrics): only what ops_metrics() says."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OpsCollector(ops))
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    """The text exposition of one scrape (blocking: run it in a thread from async code)."""
    return generate_latest(registry)
