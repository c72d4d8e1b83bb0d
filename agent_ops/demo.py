"""The live demo behind `make run`: the whole loop on the embedded Postgres, watched from the terminal.

It loads a demo policy and trigger rules into the local database, starts a real worker process
(`python -m vps_worker`) with built-in executors standing in for the step kinds its rules propose (no network needed),
beats the heartbeat every two seconds, serves the ops console, and redraws proposals, missions and the
latest events until Ctrl-C, or for DEMO_SECONDS and then prints a summary.

What happens: schedule triggers fire proposals (a tweet draft-and-post, a research job, a signal scan that
always fails); posting emits `tweet:posted`, which the reaction matrix turns into an analysis by `growth`;
the failed scan's `mission:failed` becomes a diagnosis by `brain`; a publishing job is not auto-approved and
waits for a human in the console. Every one of them goes through `ops_create_proposal`, the gates and
auto-approve.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg.types.json import Jsonb

from agent_ops.client import Ops
from agent_ops.config import Secret, Settings
from agent_ops.console import ConsoleAccess
from agent_ops.heartbeat import run_forever
from agent_ops.processes import Processes
from agent_ops.server import BackgroundServer, create_app
from agent_ops.text_table import table

DEMO_POLICY: dict[str, dict[str, Any]] = {
    "auto_approve": {
        "enabled": True,
        "allowed_step_kinds": ["draft_tweet", "post_tweet", "crawl", "analyze", "write_content", "scan"],
    },
    "step_kind_gates": {"post_tweet": {"daily_limit": 200}, "deploy": {"enabled": False}},
    "reaction_matrix": {
        "enabled": True,
        "patterns": [
            {"name": "demo_tweet_posted", "source": "twitter-alt", "tags": ["tweet", "posted"], "target": "growth",
             "type": "analyze", "probability": 1.0, "cooldown": 0, "payload": {"seconds": 0.5},
             "title": "Why did that tweet land?"},
            {"name": "demo_mission_failed", "source": "*", "tags": ["mission:failed"], "target": "brain",
             "type": "diagnose", "step_kind": "analyze", "probability": 1.0, "cooldown": 0,
             "payload": {"seconds": 0.5}, "title": "Diagnose a failed mission"},
        ],
    },
}  # fmt: skip

DEMO_RULES: list[dict[str, Any]] = [
    {
        "name": "demo_draft_and_post",
        "conditions": {"topics": ["a product tip", "behind the scenes", "a lesson learned"]},
        "action_config": {
            "agent_id": "twitter-alt",
            "title": "Tweet about {{topic}}",
            "steps": [
                {"kind": "draft_tweet", "payload": {"topic": "{{topic}}"}},
                {"kind": "post_tweet", "payload": {"type": "tweet:posted", "tags": ["tweet", "posted"],
                                                    "payload": {"topic": "{{topic}}"}}},
            ],
        },
    },
    {
        "name": "demo_research",
        "conditions": {"topics": ["pricing", "onboarding"]},
        "action_config": {
            "agent_id": "brain",
            "title": "Research {{topic}}",
            "steps": [
                {"kind": "crawl", "payload": {"seconds": 1}},
                {"kind": "analyze", "payload": {"seconds": 0.5}},
                {"kind": "write_content", "payload": {"format": "memo", "topic": "{{topic}}"}},
            ],
        },
    },
    {
        # Not auto-approved (publish is not in the demo's allowed kinds): it waits in the console for a human.
        "name": "demo_needs_a_human",
        "conditions": {"topics": ["the weekly report", "the release notes"]},
        "action_config": {
            "agent_id": "brain",
            "title": "Publish {{topic}}",
            "steps": [
                {"kind": "write_content", "payload": {"format": "post", "topic": "{{topic}}"}},
                {"kind": "publish", "payload": {"topic": "{{topic}}"}},
            ],
        },
    },
    {
        "name": "demo_signal_scan",
        "conditions": {},
        "action_config": {
            "agent_id": "growth",
            "title": "Scan competitor signals",
            "steps": [{"kind": "scan", "payload": {"reason": "the signal source is offline (demo failure)"}}],
        },
    },
]  # fmt: skip

WORKER_ID = "demo-worker"
# The step kinds of the demo's rules run by built-in executors, so the demo needs no network.
DEMO_ALIASES = {
    "draft_tweet": "echo",
    "post_tweet": "emit_event",
    "crawl": "sleep",
    "analyze": "sleep",
    "write_content": "echo",
    "scan": "fail",
    "publish": "echo",
}


def setup(url: str) -> None:
    """Demo policy and rules, idempotent; the rules are made due now so the first heartbeat fires them."""
    with psycopg.connect(url, autocommit=True) as conn:
        for key, value in DEMO_POLICY.items():
            conn.execute("select public.ops_set_policy(%s, %s, 'demo')", (key, Jsonb(value)))
        for rule in DEMO_RULES:
            conn.execute(
                """
                insert into public.ops_trigger_rules
                  (name, trigger_event, conditions, action_config, cooldown_minutes, jitter_minutes, enabled)
                values (%s, 'schedule', %s, %s, 1, 0, true)
                on conflict (name) do update
                  set conditions = excluded.conditions, action_config = excluded.action_config,
                      enabled = true, next_due_at = null, last_evaluated_at = null
                """,
                (rule["name"], Jsonb(rule["conditions"]), Jsonb(rule["action_config"])),
            )


def start_worker(workers: Processes, url: str) -> subprocess.Popen[bytes]:
    aliases = [arg for kind, target in DEMO_ALIASES.items() for arg in ("--alias", f"{kind}={target}")]
    return workers.start_worker(
        WORKER_ID,
        "--executors",
        "vps_worker.demo_executors",
        *aliases,
        "--concurrency",
        "4",
        "--poll-min",
        "0.5",
        "--poll-max",
        "2",
        "--grace-seconds",
        "5",
        env={"DATABASE_URL": url, "WORKER_ID": WORKER_ID},
    )


def _rows(conn: psycopg.Connection, query: str) -> list[dict[str, Any]]:
    cursor = conn.execute(query.encode())
    names = [c.name for c in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    return {
        "proposals": _rows(conn, "select source, status, count(*) as n from public.ops_mission_proposals "
                                 "group by 1, 2 order by 1, 2"),
        "missions": _rows(conn, "select status, count(*) as n from public.ops_missions group by 1 order by 1"),
        "completed_by_source": _rows(conn, "select p.source, count(*) as n from public.ops_missions m "
                                           "join public.ops_mission_proposals p on p.id = m.proposal_id "
                                           "where m.status = 'succeeded' group by 1 order by 1"),
        "recent_missions": _rows(conn, """
            select m.id, m.agent_id as agent, m.status, p.source,
                   (select count(*) filter (where s.status = 'succeeded') || '/' || count(*)
                      from public.ops_mission_steps s where s.mission_id = m.id) as steps, m.title
              from public.ops_missions m join public.ops_mission_proposals p on p.id = m.proposal_id
             order by m.id desc limit 8"""),
        "events": _rows(conn, "select to_char(created_at at time zone 'UTC', 'HH24:MI:SS') as time, type,"
                              " agent_id as agent, title from public.ops_agent_events order by id desc limit 10"),
        "steps_run": _rows(conn, "select count(*) as n from public.ops_mission_steps where attempt > 0")[0]["n"],
        "events_total": _rows(conn, "select count(*) as n from public.ops_agent_events")[0]["n"],
    }  # fmt: skip


def _counts(rows: list[dict[str, Any]], key: str) -> str:
    return " · ".join(f"{r[key]} {r['n']}" for r in rows) or "none yet"


def render(view: dict[str, Any], elapsed: float, out: TextIO, clear: bool, console: str = "") -> None:
    lines = [
        f"agent-ops demo · {elapsed:4.0f}s · worker demo-worker · heartbeat every 2s · Ctrl-C to stop",
        *([console] if console else []),
        "",
        "proposals  " + (" · ".join(f"{r['source']}/{r['status']} {r['n']}" for r in view["proposals"]) or "none yet"),
        "missions   " + _counts(view["missions"], "status"),
        "",
        table(view["recent_missions"], ["id", "agent", "status", "source", "steps", "title"]),
        "",
        table(view["events"], ["time", "type", "agent", "title"]),
    ]
    out.write(("\x1b[H\x1b[2J" if clear else "\n") + "\n".join(lines) + "\n")
    out.flush()


def summary(view: dict[str, Any], elapsed: float, out: TextIO) -> bool:
    done = {r["source"]: r["n"] for r in view["completed_by_source"]}
    proposals = " · ".join(f"{r['source']}/{r['status']} {r['n']}" for r in view["proposals"])
    out.write(
        f"\nDemo summary after {elapsed:.0f}s\n"
        f"  proposals           {proposals}"
        f"\n  missions            {_counts(view['missions'], 'status')}"
        f"\n  completed missions  from triggers {done.get('trigger', 0)} · from reactions {done.get('reaction', 0)}"
        f" · from the API {done.get('api', 0)}"
        f"\n  steps run           {view['steps_run']}   events written {view['events_total']}\n"
    )
    return bool(done.get("trigger", 0) > 0 and done.get("reaction", 0) > 0)


def run(
    url: str,
    seconds: float | None,
    log_dir: Path,
    out: TextIO = sys.stdout,
    console: ConsoleAccess | None = None,
    console_port: int = 8080,
    key_hint: str = "",
) -> int:
    """The loop until Ctrl-C or `seconds`; with `console`, the ops console is served on `console_port` too."""
    setup(url)
    stop = threading.Event()
    interactive = out.isatty() and seconds is None
    with ExitStack() as stack:
        ops = stack.enter_context(Ops(Settings(database_url=Secret(url), retries=1)))
        banner = ""
        if console is not None:
            server = stack.enter_context(BackgroundServer(create_app(ops, console=console), console_port))
            banner = f"console {server.url}/console/ · sign in with {key_hint or 'the console key'}"
            out.write(f"{banner}\n")
        # SIGTERM (the worker hands its running steps back), then a kill if it does not stop in time.
        workers = stack.enter_context(Processes(log_dir, append=True))
        start_worker(workers, url)
        beat = threading.Thread(target=run_forever, args=(ops, 2.0), kwargs={"stop": stop}, daemon=True)
        beat.start()
        started = time.monotonic()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while seconds is None or time.monotonic() - started < seconds:
                    render(snapshot(conn), time.monotonic() - started, out, clear=interactive, console=banner)
                    time.sleep(1.0 if interactive else 5.0)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            workers.stop(timeout=20)
            beat.join(timeout=10)
        with psycopg.connect(url, autocommit=True) as conn:
            closed_the_loop = summary(snapshot(conn), time.monotonic() - started, out)
    if seconds is not None and not closed_the_loop:
        out.write("  the loop did not close: no completed mission from both a trigger and a reaction "
                  f"(worker log: {log_dir / f'{WORKER_ID}.log'})\n")  # fmt: skip
        return 1
    return 0
