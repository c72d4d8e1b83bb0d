"""Executors only the demo loads (`make run`): a step kind that always fails, to show the loop healing."""

from __future__ import annotations

from vps_worker.executors import PermanentError, StepContext, executor


@executor("fail")
def fail(ctx: StepContext) -> None:
    raise PermanentError(str(ctx.payload.get("reason") or "this step always fails (demo)"))
