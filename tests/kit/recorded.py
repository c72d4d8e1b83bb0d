"""The `recorded` executor, and the tally of what it recorded.

Before it runs, the executor appends "step attempt pid" to a file of its own process (one O_APPEND file per
worker process in RECORD_DIR). The record lives outside Postgres, so it survives database restarts and
SIGKILLs, and a step that ran twice shows up twice whatever the database says.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vps_worker.executors import RetryableError, StepContext, executor

KIND = "recorded"
_record: int | None = None


def _fd() -> int:
    global _record  # noqa: PLW0603 - one descriptor per process, opened on first use
    if _record is None:
        path = Path(os.environ["RECORD_DIR"]) / f"{os.getpid()}.log"
        _record = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _record


@executor(KIND)
def recorded(ctx: StepContext) -> dict[str, Any]:
    # One write(2) under O_APPEND: whole lines, even with several executor threads in one process.
    os.write(_fd(), f"{ctx.step_id} {ctx.attempt} {os.getpid()}\n".encode())
    seconds = float(ctx.payload.get("seconds", 0))
    if seconds and ctx.cancelled.wait(seconds):
        raise RetryableError("cancelled")
    return {}


@dataclass
class Tally:
    """What the executors' records say happened: executions per step, and by which processes."""

    executions: Counter[int]
    processes: set[int]

    @classmethod
    def read(cls, folder: Path) -> Tally:
        counts: Counter[int] = Counter()
        pids: set[int] = set()
        for path in folder.glob("*.log"):
            for line in path.read_text().splitlines():
                step_id, _, pid = line.split()
                counts[int(step_id)] += 1
                pids.add(int(pid))
        return cls(counts, pids)

    @property
    def repeated(self) -> int:
        """Steps that ran more than once."""
        return sum(1 for n in self.executions.values() if n > 1)
