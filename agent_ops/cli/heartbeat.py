"""`agent-ops heartbeat [--every N]`: driving the heartbeat from outside the database."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from agent_ops.cli.context import connection_options, open_ops, print_json, print_json_line
from agent_ops.cli.output import note
from agent_ops.heartbeat import HeartbeatRun, run_forever, run_once
from agent_ops.notify import Deliverer
from agent_ops.triggers import load_plugins


def _summary(run: HeartbeatRun) -> str:
    if run.error:
        return f"heartbeat failed: {run.error}"
    assert run.database is not None
    data = run.database.raw
    if run.database.skipped:
        return f"heartbeat skipped: {run.database.skipped}"
    parts = [
        f"run #{data.get('run_id')} {'ok' if run.ok else 'with errors'} in {data.get('duration_ms')} ms",
        f"recovered {data.get('recovery', {}).get('recovered', 0)}",
        f"triggers fired {data.get('triggers', {}).get('fired', 0)}",
        f"reactions {data.get('reactions', {}).get('processed', 0)}",
        f"pruned {sum(v for v in data.get('retention', {}).values() if isinstance(v, int))}",
    ]
    if run.plugins:
        fired = sum(len(o.get("proposals", [])) for o in run.plugins.values())
        failed = [name for name, o in run.plugins.items() if "error" in o]
        parts.append(
            f"plug-ins {len(run.plugins)} ({fired} proposals{', failed: ' + ', '.join(failed) if failed else ''})"
        )
    for error in run.database.errors:
        parts.append(f"error in {error.get('task')}: {error.get('error')}")
    return "; ".join(parts)


def _heartbeat(args: argparse.Namespace) -> int:
    plugins = load_plugins(args.plugins or [])
    with open_ops(args) as ops:
        if args.every is None:
            run = run_once(ops, plugins, plugin_budget=args.plugin_budget)
            if args.json:
                print_json(run.to_json())
            else:
                sys.stdout.write(_summary(run) + "\n")
            return 0 if run.error is None else 1

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        # After each beat (which enqueues them) the notifications that are due go out from here.
        deliverer = None if args.no_notify else Deliverer(ops)

        def report(run: HeartbeatRun) -> None:
            delivery = deliverer.deliver_once() if deliverer is not None else None
            if args.json:
                line = run.to_json()
                if delivery is not None:
                    line["notifications"] = delivery.to_json()
                print_json_line(line)
            else:
                note(_summary(run) + (f"; {delivery.summary()}" if delivery is not None else ""))
            sys.stdout.flush()

        try:
            last = run_forever(ops, args.every, plugins, stop=stop, on_run=report)
        finally:
            if deliverer is not None:
                deliverer.close()
    return 0 if last is None or last.error is None else 1


def register(commands: Any) -> None:
    common = connection_options()
    beat = commands.add_parser(
        "heartbeat",
        parents=[common],
        help="run ops_heartbeat() and the Python trigger plug-ins, once or every N seconds",
        description="Run the heartbeat once (exit 1 when the call failed), or with --every in a loop with jitter "
        "until SIGINT/SIGTERM: for a VPS crontab, systemd timer or container without pg_cron. The loop also "
        "delivers the notifications that are due after each beat (see `agent-ops notify`).",
    )
    beat.add_argument("--every", type=float, metavar="SECONDS", help="loop, one heartbeat every SECONDS (±10 %%)")
    beat.add_argument("--plugins", action="append", metavar="MODULE", help="import trigger plug-ins from MODULE")
    beat.add_argument("--plugin-budget", type=float, default=5.0, help="seconds for all plug-ins (default 5)")
    beat.add_argument(
        "--no-notify",
        action="store_true",
        help="with --every: do not deliver notifications after each beat (another deliverer does: "
        "`agent-ops serve` or `agent-ops notify`)",
    )
    beat.set_defaults(handler=_heartbeat)
