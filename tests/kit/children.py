"""Child processes for tests, benchmarks and the chaos suite: a clean environment, the checkout importable,
and waiting for a condition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent_ops.processes import Processes
from tests.kit.database import ROOT

# Settings a developer's shell may hold that would point a child at another database or change its
# behaviour; children get only what a test gives them.
OUR_SETTINGS = ("DATABASE_URL", "SUPABASE_", "AGENT_OPS_", "WORKER_", "OPS_", "CONSOLE_", "FORWARDED_ALLOW_IPS")


def environment(**values: str) -> dict[str, str]:
    """This process's environment without any agent-ops setting, plus `values`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(OUR_SETTINGS)}, **values}


class CheckoutProcesses(Processes):
    """Children run in the checkout (its modules importable: tests.*, bench.*) with `environment(**values)`."""

    def __init__(self, logs: Path, **values: str) -> None:
        super().__init__(logs, environ=environment(PYTHONPATH=str(ROOT), **values), cwd=ROOT)


def agent_ops(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 120,
    program: Sequence[str] = (sys.executable, "-m", "agent_ops"),
) -> subprocess.CompletedProcess[str]:
    """`agent-ops ARGS` run to its end (by default as `python -m agent_ops`), its output captured as text."""
    return subprocess.run(
        [*program, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env),
        cwd=cwd,
        input=stdin,
    )


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Seconds until `condition()` is true; raises TimeoutError naming what never happened."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
