"""`vps-worker` / `python -m vps_worker`: run the executor loop until SIGTERM/SIGINT.

Settings come from flags, then the environment, then `.env`: the agent_ops transport settings
(DATABASE_URL or SUPABASE_URL + key) and the WORKER_* variables (see README, "Running workers").
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from agent_ops.client import Ops
from agent_ops.config import ConfigError, Settings
from agent_ops.localpg import with_local_fallback
from vps_worker.builtin import builtin_executors
from vps_worker.config import WorkerSettings
from vps_worker.executors import load_executors, with_aliases
from vps_worker.logs import setup_logging
from vps_worker.worker import Worker

log = logging.getLogger("vps_worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vps-worker",
        description="Claim mission steps, run them by kind, report results; stop gracefully on SIGTERM.",
        epilog="Every flag has a WORKER_* environment variable; see README. Exit 0 after a graceful stop, "
        "2 on a configuration error, 75 (EX_TEMPFAIL) after draining because more hung executors were "
        "abandoned than --max-abandoned allows: restart it (systemd Restart=always, docker --restart).",
    )
    parser.add_argument("--database-url", help="direct Postgres (default $DATABASE_URL)")
    parser.add_argument("--transport", choices=["direct", "postgrest"])
    parser.add_argument("--worker-id", help="default host-pid ($WORKER_ID)")
    parser.add_argument("--kinds", help="comma-separated kinds to run (default: every registered executor)")
    parser.add_argument("--concurrency", type=int, help="steps run at once (default 4)")
    parser.add_argument("--poll-min", type=float, help="idle poll interval, lower bound in seconds (default 5)")
    parser.add_argument("--poll-max", type=float, help="idle poll interval, upper bound in seconds (default 15)")
    parser.add_argument("--lease-seconds", type=int, help="lease per claim (default: worker_policy)")
    parser.add_argument("--grace-seconds", type=float, help="on SIGTERM, time running steps get (default 30)")
    parser.add_argument(
        "--max-abandoned", type=int, help="hung executors tolerated before exiting 75 (default: the concurrency)"
    )
    parser.add_argument("--executors", action="append", metavar="MODULE", help="import executors from MODULE")
    parser.add_argument("--alias", action="append", metavar="KIND=EXECUTOR", help="run KIND with EXECUTOR")
    parser.add_argument("--no-listen", action="store_true", help="poll only, no LISTEN on ops_steps")
    parser.add_argument(
        "--no-batch-reports", action="store_true", help="one call per report instead of reports with the next claim"
    )
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    parser.add_argument("--log-payloads", action="store_true", help="include step payloads in logs")
    parser.add_argument("--alive-file", help="touch this file every loop (container healthcheck)")
    return parser


def settings_from(args: argparse.Namespace) -> tuple[Settings, WorkerSettings]:
    settings = with_local_fallback(Settings.load(database_url=args.database_url, transport=args.transport)).validated()
    worker = WorkerSettings.from_environ(settings.environ)
    overrides: dict[str, Any] = {
        "worker_id": args.worker_id,
        "kinds": [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None,
        "concurrency": args.concurrency,
        "poll_min": args.poll_min,
        "poll_max": args.poll_max,
        "lease_seconds": args.lease_seconds,
        "grace_seconds": args.grace_seconds,
        "max_abandoned": args.max_abandoned,
        "executor_modules": [*worker.executor_modules, *(args.executors or [])] if args.executors else None,
        "aliases": {**worker.aliases, **dict(a.split("=", 1) for a in args.alias)} if args.alias else None,
        "listen": False if args.no_listen else None,
        "batch_reports": False if args.no_batch_reports else None,
        "log_json": True if args.log_json else None,
        "log_payloads": True if args.log_payloads else None,
        "alive_file": args.alive_file,
    }
    worker = dataclasses.replace(worker, **{k: v for k, v in overrides.items() if v is not None})
    if worker.poll_max < worker.poll_min:
        raise ConfigError("the idle poll range is empty: --poll-max must be at least --poll-min")
    if worker.max_abandoned is not None and worker.max_abandoned < 0:
        raise ConfigError("--max-abandoned must be at least 0")
    return settings, worker


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings, worker_settings = settings_from(args)
    except ConfigError as error:
        sys.stderr.write(f"vps-worker: configuration: {error}\n")
        return 2
    setup_logging(worker_settings.log_json)
    try:
        executors = with_aliases(
            {**builtin_executors(worker_settings), **load_executors(worker_settings.executor_modules)},
            worker_settings.aliases,
        )
        with Ops(settings) as ops:
            worker = Worker(ops, worker_settings, executors)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: worker.request_stop())
            return worker.run()
    except (KeyError, ValueError, ImportError) as error:
        log.error("cannot start: %s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
