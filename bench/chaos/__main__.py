"""`python -m bench.chaos --short | --full` (make chaos-short in `make test`, make chaos): R1-R7, figures
printed as they come, a summary table, exit status 1 if any invariant broke."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from agent_ops.text_table import table
from bench.chaos import ChaosFailure, crashes, exactly_once, fuzz, limits, races, restart
from bench.common import progress

# (short, full) sizes of each scenario.
SIZES = {
    "R1": (5_000, 50_000),  # steps, 8 workers
    "R2": (4_000, 20_000),  # steps per run (calm, then chaos)
    "R3": (2_000, 10_000),  # steps, restart after a third
    "R4": (200, 200),  # concurrent proposals, quota 5
    "R5": (3, 10),  # copies of the 4 due rules, 10 concurrent callers
    "R6": (40, 400),  # hypothesis examples per RPC
    "R7": (100, 1_000),  # steps through max_running = 3 with 200 claimers (and per_minute for 3 s / 75 s)
}


def scenarios(full: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    size = {name: sizes[1] if full else sizes[0] for name, sizes in SIZES.items()}
    return {
        "R1": lambda: exactly_once.run(size["R1"]),
        "R2": lambda: crashes.run(size["R2"]),
        "R3": lambda: restart.run(size["R3"]),
        "R4": lambda: races.gate_races(size["R4"]),
        "R5": lambda: races.trigger_races(copies=size["R5"]),
        # The short form replays the same examples every run (CI stays deterministic); the full one explores.
        "R6": lambda: fuzz.run(size["R6"], derandomize=not full),
        "R7": lambda: limits.run(size["R7"], full=full),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--short", action="store_true", help="the form `make test` runs (default)")
    form.add_argument("--full", action="store_true", help="the full sizes (R1 with 50,000 steps ...)")
    parser.add_argument("--only", help="comma-separated scenarios, e.g. R1,R4")
    args = parser.parse_args(argv)
    chosen = scenarios(args.full)
    wanted = [s.strip().upper() for s in args.only.split(",")] if args.only else list(chosen)
    if unknown := sorted(set(wanted) - set(chosen)):
        parser.error(f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(chosen)}")

    rows = []
    failed = 0
    for name in wanted:
        started = time.monotonic()
        try:
            figures = chosen[name]()
            verdict = "ok"
        except ChaosFailure as error:
            figures, verdict = {"failure": str(error)}, "FAILED"
        except Exception as error:  # a crashed scenario is a failed one; the rest still run
            traceback.print_exc()
            figures, verdict = {"error": f"{type(error).__name__}: {error}"}, "FAILED"
        failed += verdict != "ok"
        seconds = time.monotonic() - started
        progress(f"{name} {verdict} in {seconds:.0f}s: {json.dumps(figures)}")
        rows.append({"scenario": name, "result": verdict, "seconds": f"{seconds:.0f}", "figures": json.dumps(figures)})
    sys.stdout.write(table(rows, ["scenario", "result", "seconds", "figures"], max_width=400) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
