"""The P2 peers' side of the benchmark: a `noop` task for procrastinate and a `noop` entrypoint for pgqueuer.

Both read the database from PEER_DATABASE_URL (set by bench/peers.py for each run). PEER_POOL_SIZE, when set,
sizes procrastinate's connection pool (its default, psycopg_pool's, is 4 connections): with `--concurrency N`
each job in flight holds a connection to fetch and to finish it, so its best configuration has N of them.
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate
import psycopg
from pgqueuer import PgQueuer
from pgqueuer.models import Job

_pool_size = int(os.environ.get("PEER_POOL_SIZE") or 0)
_pool: dict[str, Any] = {"min_size": _pool_size, "max_size": _pool_size} if _pool_size else {}
procrastinate_app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PEER_DATABASE_URL", ""), **_pool)
)


def noop() -> None:
    return None


async def noop_async() -> None:
    return None


# Registered by call rather than as decorators so the module type-checks with or without the peers installed.
procrastinate_app.task(name="noop", queue="bench")(noop)
# procrastinate runs a sync task on a thread; with --concurrency its documented form is an async task.
procrastinate_app.task(name="noop_async", queue="bench")(noop_async)


async def pgqueuer_factory() -> PgQueuer:
    connection = await psycopg.AsyncConnection.connect(os.environ["PEER_DATABASE_URL"], autocommit=True)
    queuer = PgQueuer.from_psycopg_connection(connection)

    async def pgqueuer_noop(job: Job) -> None:
        return None

    queuer.entrypoint("noop")(pgqueuer_noop)
    return queuer


async def run_pgqueuer(batch: int, max_concurrent_tasks: int | None = None) -> None:
    """pgqueuer's consumer loop, as its `run` command would start it (that command fails on pgqueuer 1.6 with
    the installed typer: it hands its log level over as a string). One at a time is batch 1 with at most 2
    tasks (the least it allows); None leaves the number of tasks in flight unlimited, its default."""
    queuer = await pgqueuer_factory()
    await queuer.run(batch_size=batch, max_concurrent_tasks=max_concurrent_tasks)
