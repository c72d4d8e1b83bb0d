"""The P2 peers' side of the benchmark: a `noop` task for procrastinate and a `noop` entrypoint for pgqueuer.

Both read the database from PEER_DATABASE_URL (set by bench/peers.py for each run).
"""

from __future__ import annotations

import os

import procrastinate
import psycopg
from pgqueuer import PgQueuer
from pgqueuer.models import Job

procrastinate_app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PEER_DATABASE_URL", ""))
)


def noop() -> None:
    return None


# Registered by call rather than as decorators so the module type-checks with or without the peers installed.
procrastinate_app.task(name="noop", queue="bench")(noop)


async def pgqueuer_factory() -> PgQueuer:
    connection = await psycopg.AsyncConnection.connect(os.environ["PEER_DATABASE_URL"], autocommit=True)
    queuer = PgQueuer.from_psycopg_connection(connection)

    async def pgqueuer_noop(job: Job) -> None:
        return None

    queuer.entrypoint("noop")(pgqueuer_noop)
    return queuer


async def run_pgqueuer(batch: int) -> None:
    """pgqueuer's consumer loop, as its `run` command would start it (that command fails on pgqueuer 1.6 with
    the installed typer: it hands its log level over as a string)."""
    queuer = await pgqueuer_factory()
    await queuer.run(batch_size=batch, max_concurrent_tasks=2 * batch)
