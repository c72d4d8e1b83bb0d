"""The `stamp` executor for P6: records, as its output, the wall-clock moment the executor started."""

from __future__ import annotations

import time

from vps_worker.executors import StepContext, executor


@executor("stamp")
def stamp(ctx: StepContext) -> dict[str, float]:
    return {"started_at": time.time()}
