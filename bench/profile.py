"""`python -m bench.profile`: where a step's time goes, for docs/benchmarks.md.

1. The database side: 2,100 claim + complete cycles (700 missions of 3 steps, drained) called directly
   (no Python worker), with pg_stat_statements tracking nested statements: mean time, calls per step and
   buffer hits of the statements inside ops_claim_next_step and ops_complete_step.
   The same for the worker's batch call: ops_report_and_claim carrying 32 reports and claiming 32 steps,
   60 times (1,920 steps), the shape of one `vps-worker --concurrency 32` on a backlog.
2. Intake: 1,000 ops_create_proposal calls (P3's proposal: gates, auto-approve, a 3-step mission), the
   same way.
3. The worker side (when py-spy is installed): one `vps-worker` working noop steps for 8 s, sampled by
   py-spy with the GIL held, summarised as self time per function and time per module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from agent_ops.text_table import table
from bench.common import bench_processes, progress
from bench.throughput import MISSIONS, build_template, drop_template
from tests.kit.children import wait_until
from tests.kit.database import migrate_and_seed, scalar, scratch_database

CYCLES = 2100
INTAKE_POLICY = {
    "auto_approve": {"enabled": True, "allowed_step_kinds": ["crawl", "analyze", "write_content"]},
    "daily_proposal_limit": {"limit": 1000000},
    "step_kind_gates": {"write_content": {"daily_limit": 1000000}, "deploy": {"enabled": False}},
}
PROPOSE = (
    b"select public.ops_create_proposal(jsonb_build_object('agent_id', %s::text, 'title', 'Research and write up',"
    b' \'steps\', \'[{"kind": "crawl", "payload": {"url": "https://example.com"}}, {"kind": "analyze"},'
    b' {"kind": "write_content"}]\'::jsonb))'
)
TOP = """
select round(mean_exec_time::numeric, 3) as mean_ms, round(calls::numeric / %s, 2) as calls_each,
       round(shared_blks_hit::numeric / calls, 1) as buffers, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) as query
  from pg_stat_statements
 where dbid = (select oid from pg_database where datname = current_database())
   and query not like '%%pg_stat_statements%%'
 order by total_exec_time desc limit 18
"""


def track_statements(conn: psycopg.Connection) -> None:
    """pg_stat_statements on, nested statements included, counters from zero."""
    conn.execute(b"create extension if not exists pg_stat_statements")
    conn.execute(b"set pg_stat_statements.track = 'all'")
    conn.execute(b"select pg_stat_statements_reset()")


def write_statements(conn: psycopg.Connection, title: str, per: int) -> None:
    """The top statements since track_statements, with calls counted per step (or proposal)."""
    rows = conn.execute(TOP.encode(), (per,)).fetchall()
    columns = ["mean_ms", "calls_each", "buffers", "query"]
    sys.stdout.write(f"\n## {title}\n\n")
    sys.stdout.write(table([dict(zip(columns, r, strict=True)) for r in rows], columns, max_width=90) + "\n")


def database_profile(template: str) -> None:
    with scratch_database("bench_profile", template=template) as url, psycopg.connect(url, autocommit=True) as conn:
        track_statements(conn)
        started = time.perf_counter()
        for _ in range(CYCLES):
            step = conn.execute(b"select public.ops_claim_next_step('profile', array['noop']) -> 0").fetchone()
            if step is None or step[0] is None:
                raise RuntimeError("the backlog ran dry")
            conn.execute(b"select public.ops_complete_step(%s, %s, '{}')", (step[0]["id"], step[0]["attempt"]))
        elapsed = time.perf_counter() - started
        write_statements(
            conn,
            f"Database: {CYCLES} claim + complete cycles, {elapsed / CYCLES * 1000:.2f} ms per step "
            "(client round trips included)",
            CYCLES,
        )


def batch_profile(template: str, batch: int = 32, calls: int = 60) -> None:
    with scratch_database("bench_profile", template=template) as url, psycopg.connect(url, autocommit=True) as conn:
        call = b"select public.ops_report_and_claim('profile', %s, array['noop'], %s, null)"
        held = conn.execute(call, (None, batch)).fetchone()[0]["claimed"]  # type: ignore[index]
        track_statements(conn)
        started, steps = time.perf_counter(), 0
        for _ in range(calls):
            reports = [{"step_id": s["id"], "attempt": s["attempt"], "output": {}} for s in held]
            held = conn.execute(call, (Jsonb(reports), batch)).fetchone()[0]["claimed"]  # type: ignore[index]
            steps += len(reports)
        elapsed = time.perf_counter() - started
        write_statements(
            conn,
            f"Database: {calls} report-and-claim calls of {batch} steps, {elapsed / steps * 1000:.2f} ms per step "
            "(client round trips included)",
            steps,
        )


def intake_profile(calls: int = 1000) -> None:
    with scratch_database("bench_profile") as url, psycopg.connect(url, autocommit=True) as conn:
        migrate_and_seed(url, drop_keys=("max_active_missions",), policy=INTAKE_POLICY)
        track_statements(conn)
        started = time.perf_counter()
        for n in range(calls):
            conn.execute(PROPOSE, (f"agent-{n % 50}",))
        elapsed = time.perf_counter() - started
        title = f"Intake: {calls} proposals, {elapsed / calls * 1000:.2f} ms each (client round trips included)"
        write_statements(conn, title, calls)


def worker_profile(template: str, seconds: int = 8) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.stdout.write("\n## Worker: py-spy is not installed (pip install py-spy); skipped\n")
        return
    with scratch_database("bench_profile", template=template) as url, bench_processes("profile") as children:
        worker = children.start_worker(
            "worker",
            "--kinds",
            "noop",
            "--concurrency",
            "1",
            "--poll-min",
            "0.05",
            "--poll-max",
            "0.2",
            env={"DATABASE_URL": url},
        )
        done = "select count(*) from public.ops_mission_steps where status = 'succeeded'"
        wait_until(lambda: int(scalar(url, done)) > 0, 60, "a first completion")
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "stacks.txt"
            before = int(scalar(url, done))
            subprocess.run(
                [
                    spy,
                    "record",
                    "--gil",
                    "--format",
                    "raw",
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--output",
                    str(raw),
                    "--pid",
                    str(worker.pid),
                ],
                check=True,
                capture_output=True,
            )
            steps = int(scalar(url, done)) - before
            stacks = raw.read_text().splitlines()
    self_time: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    total = 0
    for line in stacks:
        frames, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        leaf = frames.split(";")[-1]
        self_time[re.sub(r" \(.*/", " (", leaf)] += n
        module = re.search(r"\(([^)]*?)(?:\.py)?:\d+\)$", leaf)
        by_module[re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", module.group(1)) if module else "?"] += n
    sys.stdout.write(
        f"\n## Worker: py-spy, GIL held, {seconds} s, {steps} steps, "
        f"{total / 250 / max(steps, 1) * 1000:.2f} ms of Python per step\n\n"
    )
    rows = [{"share": f"{n / total:.1%}", "function": name} for name, n in self_time.most_common(15)]
    sys.stdout.write(table(rows, ["share", "function"], max_width=110) + "\n\n")
    rows = [{"share": f"{n / total:.1%}", "module": name} for name, n in by_module.most_common(12)]
    sys.stdout.write(table(rows, ["share", "module"], max_width=110) + "\n")


def main() -> int:
    # Claims go breadth-first (promoted steps queue behind older first steps), so the database profile drains
    # a backlog it can finish — every mission started, promoted twice and finalized — and the worker gets P1's.
    progress("profile: building backlogs of queued 3-step noop missions")
    small, large = build_template(CYCLES // 3 + 10), build_template(MISSIONS)
    try:
        progress(f"profile: {CYCLES} claim + complete cycles with pg_stat_statements")
        database_profile(small)
        progress("profile: report-and-claim calls of 32 steps with pg_stat_statements")
        batch_profile(large)
        progress("profile: 1,000 proposals with pg_stat_statements")
        intake_profile()
        progress("profile: one worker under py-spy")
        worker_profile(large)
    finally:
        drop_template(small)
        drop_template(large)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
