"""`python -m bench` (make bench): P1-P7, a table on stdout, the full result as JSON in bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from agent_ops.text_table import table
from bench import claim_latency, heartbeat_cost, intake, memory, peers, throughput, wakeup
from bench.common import progress
from tests.kit.database import ROOT, embedded_server

RESULTS = ROOT / "bench" / "results"
ALL = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    with psycopg.connect(embedded_server().url("postgres")) as conn:
        version = conn.execute(b"select version()").fetchone()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": version[0] if version else None,
    }


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def summary(results: dict[str, Any]) -> list[dict[str, str]]:
    """One line per figure: what was measured, its value, the baseline it is divided by, the ratio, the target."""
    rows: list[dict[str, str]] = []

    def add(figure: str, what: str, value: str, baseline: str = "", ratio: str = "", target: str = "") -> None:
        rows.append(
            {"figure": figure, "measured": what, "value": value, "baseline": baseline, "ratio": ratio, "target": target}
        )

    raw_by_workers: dict[int, float] = {}
    for row in results.get("P1", {}).get("rows", []):
        n, raw = row["workers"], row["raw_jobs_per_s"]
        raw_by_workers[n] = raw
        # (what was measured, the row's figure and ratio keys, the target)
        for what, figure, ratio, target in (
            (f"{n} worker(s), 1 at a time", "steps_per_s", "ratio", "≥ 0.70" if n == 4 else ""),
            (f"{n} pgbench client(s), agent-ops SQL alone", "sql_steps_per_s", "sql_ratio", ""),
            (f"{n} worker(s), batch of 16", "batch_steps_per_s", "batch_ratio", ""),
        ):
            add(
                "P1",
                f"steps/s, {what}",
                _f(row[figure]),
                f"raw SKIP LOCKED {_f(raw)} jobs/s",
                _f(row[ratio], 2),
                target,
            )
    for row in results.get("P2", {}).get("rows", []):
        n = row["workers"]
        raw = raw_by_workers.get(n)
        for peer in ("procrastinate", "pgqueuer"):
            rate = row[f"{peer}_jobs_per_s"]
            add(
                "P2",
                f"{peer} jobs/s, {n} worker(s)",
                _f(rate),
                f"raw {_f(raw)} jobs/s" if raw else "",
                _f(rate / raw, 2) if raw else "",
            )
    for row in results.get("P3", {}).get("rows", []):
        add(
            "P3",
            f"proposals/s, {row['clients']} client(s)",
            _f(row["proposals_per_s"]),
            f"plain inserts {_f(row['raw_inserts_per_s'])}/s",
            _f(row["ratio"], 2),
        )
    if p4 := results.get("P4"):
        add(
            "P4",
            "heartbeat after 1k new events, 1M-event history",
            f"{_f(p4['history_ms'], 1)} ms",
            f"empty history {_f(p4['empty_ms'], 1)} ms",
            _f(p4["ratio"], 2),
            "≤ 1.50",
        )
    if p5 := results.get("P5"):
        for p, target in (("p50", "≤ 1.20"), ("p95", "")):
            add(
                "P5",
                f"claim {p}, 1M finished steps",
                f"{_f(p5[f'large_{p}_ms'], 2)} ms",
                f"1k finished {_f(p5[f'small_{p}_ms'], 2)} ms",
                _f(p5[f"ratio_{p}"], 2),
                target,
            )
    if p6 := results.get("P6"):
        add(
            "P6",
            "wake-up p50 / p95, LISTEN",
            f"{_f(p6['listen_p50_ms'], 1)} / {_f(p6['listen_p95_ms'], 1)} ms",
            f"poll only {_f(p6['poll_p50_ms'])} / {_f(p6['poll_p95_ms'])} ms",
            _f(p6["listen_p50_ms"] / p6["poll_p50_ms"], 4),
            "p50 ≤ 50 ms",
        )
    if p7 := results.get("P7"):
        add(
            "P7",
            f"worker peak RSS, {p7['most_running_at_once']} steps at once",
            f"{_f(p7['busy_peak_mib'], 1)} MiB",
            f"idle worker {_f(p7['idle_peak_mib'], 1)} MiB",
            _f(p7["ratio"], 2),
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated figures to run (default: all)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window of P1 and P2 (default 8)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    wanted = [f.strip().upper() for f in args.only.split(",") if f.strip()]
    if unknown := sorted(set(wanted) - set(ALL)):
        parser.error(f"--only: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")

    figures: dict[str, Callable[[], dict[str, Any]]] = {
        "P1": lambda: throughput.run(args.seconds),
        "P2": lambda: peers.run(args.seconds),
        "P3": intake.run,
        "P4": heartbeat_cost.run,
        "P5": claim_latency.run,
        "P6": wakeup.run,
        "P7": memory.run,
    }
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "command": "make bench",
        "started_at": datetime.now(UTC).isoformat(),
    }
    for name in ALL:
        if name in wanted:
            figure_started = time.monotonic()
            results[name] = figures[name]()
            progress(f"{name} done in {time.monotonic() - figure_started:.0f}s")
    results["seconds"] = round(time.monotonic() - started, 1)

    output = args.output or RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(table(summary(results), ["figure", "measured", "value", "baseline", "ratio", "target"]) + "\n")
    sys.stdout.write(
        f"\n{results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"{results['seconds']:.0f}s; full result: {output}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
