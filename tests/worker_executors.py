"""Executors for the worker tests: each records its execution in `test_executions` of TEST_RECORD_URL."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg

from vps_worker.executors import RetryableError, StepContext, executor

_local = threading.local()


def record(ctx: StepContext, event: str) -> None:
    """Log an execution; reconnects, so a database restart is not mistaken for an executor failure."""
    for attempt in range(60):
        conn = getattr(_local, "conn", None)
        try:
            if conn is None or conn.closed:
                conn = _local.conn = psycopg.connect(os.environ["TEST_RECORD_URL"], autocommit=True)
            conn.execute(
                "insert into test_executions (step_id, attempt, kind, worker_id, event) values (%s, %s, %s, %s, %s)",
                (ctx.step_id, ctx.attempt, ctx.kind, os.environ.get("WORKER_ID", ""), event),
            )
            return
        except psycopg.OperationalError:
            _local.conn = None
            if attempt == 59:
                raise
            time.sleep(0.5)


def counting(ctx: StepContext) -> dict[str, Any]:
    record(ctx, "ran")
    return {"step": ctx.step_id}


for _kind in ("alpha", "beta", "gamma"):
    executor(_kind)(counting)


@executor("slow")
def slow(ctx: StepContext) -> dict[str, Any]:
    record(ctx, "started")
    if ctx.cancelled.wait(float(ctx.payload.get("seconds", 5))):
        raise RetryableError("cancelled")
    record(ctx, "finished")
    return {"slept": ctx.payload.get("seconds", 5)}


@executor("broken")
def broken(ctx: StepContext) -> None:
    record(ctx, "ran")
    raise RuntimeError("this executor always fails")


@executor("exits")
def exits(ctx: StepContext) -> None:
    record(ctx, "ran")
    raise SystemExit("an executor must not take the worker down")


@executor("nul")
def nul(ctx: StepContext) -> None:
    record(ctx, "ran")
    raise RetryableError("binary body: \x00\x01")


@executor("nan")
def nan(ctx: StepContext) -> dict[str, float]:
    record(ctx, "ran")
    return {"ratio": float("nan")}


@executor("huge")
def huge(ctx: StepContext) -> dict[str, str]:
    record(ctx, "ran")
    return {"blob": "x" * (2 * 1024 * 1024)}


@executor("leaky")
def leaky(ctx: StepContext) -> dict[str, Any]:
    """Quotes the worker's LLM key and a database URL with its password, as careless error messages do."""
    record(ctx, "ran")
    key = os.environ["LLM_API_KEY"]
    if ctx.payload.get("succeed"):
        return {"said": f"used {key}", "calls": [{"dsn": "postgresql://u:pw@h/db", f"key {key}": True}]}
    raise RuntimeError(f"upstream refused LLM_API_KEY={key} while connected to postgresql://u:pw@h/db")


@executor("hung")
def hung(ctx: StepContext) -> dict[str, Any]:
    """Ignores ctx.cancelled, like a call wedged in a library: sleeps payload.seconds (default an hour) anyway."""
    record(ctx, "started")
    until = time.monotonic() + float(ctx.payload.get("seconds", 3600))
    while time.monotonic() < until:
        time.sleep(0.05)
    record(ctx, "finished")
    return {"slept": ctx.payload.get("seconds", 3600)}


@executor("poison")
def poison(ctx: StepContext) -> dict[str, Any]:
    """Fails while the file named by POISON_FLAG exists (the fault), and works once it is gone (fixed)."""
    record(ctx, "ran")
    if os.path.exists(os.environ["POISON_FLAG"]):
        raise RuntimeError("poisoned: the upstream is broken")
    return {"fixed": True}
