"""The `chaos` executor: appends "step attempt pid" to a file of its own process before it runs.

The record lives outside Postgres (one O_APPEND file per worker process in CHAOS_DIR), so it survives
database restarts and SIGKILLs, and a step that ran twice shows up twice whatever the database says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vps_worker.executors import RetryableError, StepContext, executor

_record: int | None = None


def _fd() -> int:
    global _record  # noqa: PLW0603 - one descriptor per process, opened on first use
    if _record is None:
        path = Path(os.environ["CHAOS_DIR"]) / f"{os.getpid()}.log"
        _record = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _record


@executor("chaos")
def chaos(ctx: StepContext) -> dict[str, Any]:
    # One write(2) under O_APPEND: whole lines, even with several executor threads in one process.
    os.write(_fd(), f"{ctx.step_id} {ctx.attempt} {os.getpid()}\n".encode())
    seconds = float(ctx.payload.get("seconds", 0))
    if seconds and ctx.cancelled.wait(seconds):
        raise RetryableError("cancelled")
    return {}
