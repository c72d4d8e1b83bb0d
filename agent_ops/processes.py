"""Child processes started from Python, each writing its output to a log file of its own.

`agent-ops demo` runs its worker with this; the tests, the benchmarks and the chaos suite start theirs (and
the other processes they need) with it too. `start_worker` runs `python -m vps_worker`; `stop` sends
SIGTERM (a worker hands its running steps back) and kills what has not exited within the timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self


def worker_command(*args: str) -> list[str]:
    """`python -m vps_worker ARGS` with this interpreter."""
    return [sys.executable, "-m", "vps_worker", *args]


class Processes:
    """Named child processes logging to `<logs>/<name>.log`; stopped on leaving a `with` block.

    `environ` is the environment every child starts from (default: this process's), `env` of `start` adds to
    it; `append` keeps what a log file already holds.
    """

    def __init__(
        self,
        logs: Path,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        append: bool = False,
    ) -> None:
        self.logs = logs
        self.environ = dict(os.environ if environ is None else environ)
        self.cwd = cwd
        self.append = append
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab" if self.append else "wb") as log:
            child = subprocess.Popen(
                list(argv),
                env={**self.environ, **(env or {})},
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.children[name] = child
        return child

    def start_worker(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`python -m vps_worker ARGS`, logging to `<logs>/<name>.log`."""
        return self.start(name, worker_command(*args), env)

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [child for child in self.children.values() if child.poll() is None]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """`sig` to every child still running, then a kill for any that has not exited within `timeout`."""
        for child in self.alive():
            child.send_signal(sig)
        for child in self.children.values():
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
