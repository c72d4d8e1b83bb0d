"""The `agent-ops` CLI through subprocess: human tables, --json, exit codes, --help everywhere."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from agent_ops import Ops, step
from agent_ops.models import Usage
from tests.kit.children import agent_ops
from tests.kit.children import environment as kit_environment
from tests.kit.database import ROOT
from tests.kit.settings import direct_settings

COMMANDS = [
    [],
    ["db"],
    ["db", "start"],
    ["db", "stop"],
    ["db", "status"],
    ["db", "url"],
    ["db", "destroy"],
    ["migrate"],
    ["propose"],
    ["approve"],
    ["reject"],
    ["cancel"],
    ["status"],
    ["workers"],
    ["spend"],
    ["proposals"],
    ["missions"],
    ["steps"],
    ["events"],
    ["policy"],
    ["policy", "get"],
    ["policy", "set"],
    ["kinds"],
    ["kinds", "list"],
    ["kinds", "enable"],
    ["kinds", "disable"],
    ["triggers"],
    ["triggers", "list"],
    ["triggers", "show"],
    ["triggers", "set"],
    ["triggers", "enable"],
    ["triggers", "disable"],
    ["triggers", "delete"],
    ["triggers", "preview"],
    ["heartbeat"],
    ["serve"],
]


def environment(db_url: str | None, **extra: str) -> dict[str, str]:
    """No agent-ops setting from the developer's shell; a server home that is never started."""
    home = str(ROOT / ".agent-ops" / "cli-tests-never-started")
    return kit_environment(**({"DATABASE_URL": db_url} if db_url else {}), AGENT_OPS_HOME=home) | extra


def cli(
    *args: str, db_url: str | None = None, cwd: Path | None = None, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return agent_ops(*args, env=environment(db_url, **extra), cwd=cwd or ROOT / "tests", stdin=stdin)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_everywhere(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: agent-ops")


def test_propose_for_people_and_for_scripts(db_url: str) -> None:
    accepted = cli("propose", "--agent", "brain", "--title", "Research", "--step", "crawl",
                   "--step", 'analyze:{"topic": "pricing"}', db_url=db_url)  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert "status    accepted" in accepted.stdout
    pending = cli(
        "propose", "--agent", "twitter-alt", "--title", "Tweet", "--step", "post_tweet", "--json", db_url=db_url
    )
    assert pending.returncode == 0
    body = json.loads(pending.stdout)
    assert (body["status"], body["mission_id"]) == ("pending", None)
    rejected = cli("propose", "--agent", "ops", "--title", "Ship", "--step", "deploy", db_url=db_url)
    assert rejected.returncode == 4
    assert "deploy is disabled" in rejected.stdout
    document = {"agent_id": "brain", "title": "From stdin", "steps": [{"kind": "analyze"}]}
    from_stdin = cli("propose", "--file", "-", "--json", db_url=db_url, stdin=json.dumps(document))
    assert json.loads(from_stdin.stdout)["status"] == "accepted"


def test_exit_codes_for_bad_input_not_found_conflict_and_configuration(db_url: str) -> None:
    invalid = cli("propose", "--agent", "brain", "--title", "x", "--step", "Bad-Kind", db_url=db_url)
    assert invalid.returncode == 2
    assert "InvalidInput: steps[0].kind must match ^[a-z][a-z0-9_]{0,63}$" in invalid.stderr
    missing = cli("approve", "999999", db_url=db_url)
    assert missing.returncode == 3
    assert "proposal 999999 not found" in missing.stderr
    pending = json.loads(
        cli("propose", "--agent", "t", "--title", "t", "--step", "post_tweet", "--json", db_url=db_url).stdout
    )
    assert cli("reject", str(pending["proposal_id"]), "--reason", "no", "--by", "me", db_url=db_url).returncode == 0
    conflict = cli("approve", str(pending["proposal_id"]), db_url=db_url)
    assert conflict.returncode == 4
    assert "is not pending" in conflict.stderr
    bad_config = cli("status", db_url=db_url, AGENT_OPS_TRANSPORT="grpc")
    assert bad_config.returncode == 2
    assert "AGENT_OPS_TRANSPORT must be one of" in bad_config.stderr
    nothing = cli("status", db_url=None)
    assert nothing.returncode == 2
    assert "no database configured" in nothing.stderr
    assert "Traceback" not in invalid.stderr + missing.stderr + conflict.stderr + bad_config.stderr


def test_views_as_tables_and_json(db_url: str) -> None:
    created = json.loads(
        cli("propose", "--agent", "brain", "--title", "Viewed", "--step", "crawl", "--json", db_url=db_url).stdout
    )
    mission = str(created["mission_id"])
    proposals = cli("proposals", db_url=db_url)
    assert proposals.stdout.splitlines()[0].split()[:3] == ["ID", "AGENT", "STATUS"]
    assert "Viewed" in proposals.stdout
    missions = json.loads(cli("missions", "--json", db_url=db_url).stdout)
    assert [m["title"] for m in missions] == ["Viewed"]
    detail = cli("missions", mission, db_url=db_url)
    assert "crawl" in detail.stdout
    assert "queued" in detail.stdout
    steps = json.loads(cli("steps", "--mission", mission, "--json", db_url=db_url).stdout)
    assert [(s["kind"], s["status"]) for s in steps] == [("crawl", "queued")]
    events = json.loads(cli("events", "--type", "mission:approved", "--json", db_url=db_url).stdout)
    assert [e["mission_id"] for e in events] == [created["mission_id"]]
    status = cli("status", db_url=db_url)
    assert "queue by kind      crawl 1" in status.stdout
    assert json.loads(cli("status", "--json", db_url=db_url).stdout)["queue"] == {"crawl": 1}
    assert cli("cancel", mission, "--reason", "done", "--json", db_url=db_url).returncode == 0


def test_policy_get_and_set(db_url: str) -> None:
    assert json.loads(cli("policy", "get", "system", db_url=db_url).stdout) == {"enabled": True}
    changed = cli("policy", "set", "max_active_missions", '{"limit": 9}', "--by", "alice", db_url=db_url)
    assert changed.returncode == 0
    assert changed.stdout.strip() == 'max_active_missions = {"limit": 9}'
    refused = cli("policy", "set", "max_active_missions", '{"limit": "lots"}', db_url=db_url)
    assert refused.returncode == 2
    assert "value.limit must be an integer" in refused.stderr
    listing = cli("policy", "get", "--json", db_url=db_url)
    assert {p["key"] for p in json.loads(listing.stdout)} >= {"system", "worker_policy", "reaction_matrix"}


def test_heartbeat_once_and_its_exit_code(db_url: str) -> None:
    ok = cli("heartbeat", db_url=db_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("run #")
    as_json = json.loads(cli("heartbeat", "--json", db_url=db_url).stdout)
    assert as_json["ok"] is True
    down = cli("heartbeat", db_url="postgresql://postgres@127.0.0.1:9/x", AGENT_OPS_RETRIES="0", AGENT_OPS_TIMEOUT="1")
    assert down.returncode == 1
    assert "heartbeat failed: TransportError" in down.stdout


def test_heartbeat_every_loops_until_sigterm(db_url: str, conn: psycopg.Connection) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_ops", "heartbeat", "--every", "0.2", "--json"],
        env=environment(db_url),
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        runs = conn.execute("select count(*) from ops_action_runs").fetchone()
        if runs and runs[0] >= 3:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) >= 3
    assert all(line["ok"] for line in lines)


def test_events_follow_prints_new_events_as_they_come(db_url: str, conn: psycopg.Connection) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_ops", "events", "--follow", "--interval", "0.1", "--json"],
        env=environment(db_url),
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    conn.execute("""select ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt"}')""")
    assert process.stdout is not None
    line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=20)
    assert json.loads(line)["type"] == "tweet:posted"
    assert process.returncode == 0


def test_kinds_disable_list_and_enable(db_url: str) -> None:
    cli("propose", "--agent", "brain", "--title", "queued", "--step", "crawl", db_url=db_url)
    assert cli("kinds", "disable", "crawl", "--reason", "maintenance", db_url=db_url).stdout.strip() == "crawl disabled"
    listing = json.loads(cli("kinds", "list", "--json", db_url=db_url).stdout)
    assert listing == [{"kind": "crawl", "state": "disabled", "reason": "maintenance", "queued": 1}]
    assert cli("kinds", "enable", "crawl", db_url=db_url).returncode == 0
    listing = json.loads(cli("kinds", "list", "--json", db_url=db_url).stdout)
    assert listing == [{"kind": "crawl", "state": "enabled", "reason": None, "queued": 1}]


TRIGGER_RULE = {
    "name": "quiet-day",
    "trigger_event": "absence",
    "conditions": {"event_type": "content:published", "lookback_minutes": 1440},
    "action_config": {"agent_id": "observer", "title": "Nothing published today", "steps": [{"kind": "analyze"}]},
}


def test_triggers_list_show_set_switch_preview_and_delete(db_url: str, tmp_path: Path) -> None:
    listing = cli("triggers", "list", db_url=db_url)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^mission_failed +event +off +0 +- +- +60 min$", listing.stdout, re.M), listing.stdout
    created = cli("triggers", "set", json.dumps(TRIGGER_RULE), "--by", "ada", db_url=db_url)
    assert (created.returncode, created.stdout) == (0, "quiet-day: created (disabled)\n"), created.stderr
    again = cli("triggers", "set", "-", stdin=json.dumps(TRIGGER_RULE), db_url=db_url)
    assert again.stdout == "quiet-day: unchanged\n"

    # The output of `show --json`, edited, is set again from a file; its bookkeeping fields are left out.
    shown = json.loads(cli("triggers", "show", "quiet-day", "--json", db_url=db_url).stdout)
    assert (shown["fire_count"], shown["next_due_at"], shown["recent_fires"]) == (0, None, [])
    (tmp_path / "rules.json").write_text(json.dumps([{**shown, "cooldown_minutes": 30}]))
    updated = cli("triggers", "set", "--file", str(tmp_path / "rules.json"), "--json", db_url=db_url)
    assert updated.returncode == 0, updated.stderr
    assert (json.loads(updated.stdout)["action"], json.loads(updated.stdout)["changed"]) == (
        "updated",
        ["cooldown_minutes"],
    )

    assert cli("triggers", "enable", "quiet-day", db_url=db_url).stdout == "quiet-day: enabled\n"
    preview = cli("triggers", "preview", "quiet-day", db_url=db_url)
    assert preview.returncode == 0, preview.stderr
    assert "checker        no content:published event in the last 1440 minutes" in preview.stdout
    assert "outcome        accepted" in preview.stdout
    assert "would propose  yes" in preview.stdout
    assert '"title": "Nothing published today"' in preview.stdout
    draft = cli("triggers", "preview", "--file", "-", "--json", stdin=json.dumps({**TRIGGER_RULE, "name": "draft"}),
                db_url=db_url)  # fmt: skip
    assert (json.loads(draft.stdout)["saved"], json.loads(draft.stdout)["matches"]) == (False, True)
    assert cli("triggers", "show", "draft", db_url=db_url).returncode == 3, "a previewed draft is not saved"

    show = cli("triggers", "show", "quiet-day", db_url=db_url)
    assert "enabled  yes" in show.stdout
    assert '"cooldown_minutes": 30' in show.stdout
    assert cli("triggers", "disable", "quiet-day", db_url=db_url).stdout == "quiet-day: disabled\n"
    assert cli("triggers", "delete", "quiet-day", db_url=db_url).stdout == "quiet-day: deleted\n"

    refused = cli("triggers", "set", json.dumps({**TRIGGER_RULE, "conditions": {}}), db_url=db_url)
    assert refused.returncode == 2
    assert "InvalidInput: conditions.event_type is required" in refused.stderr
    assert cli("triggers", "set", "{not json", db_url=db_url).returncode == 2
    missing = cli("triggers", "delete", "quiet-day", db_url=db_url)
    assert missing.returncode == 3
    assert 'trigger rule "quiet-day" not found' in missing.stderr


def test_status_exits_5_while_a_queue_is_stalled_or_the_heartbeat_is_late(
    db_url: str, conn: psycopg.Connection
) -> None:
    never = cli("status", db_url=db_url)
    assert never.returncode == 5, "no heartbeat has run: the loop is not driven"
    assert "needs attention: no heartbeat has run" in never.stderr
    assert cli("heartbeat", db_url=db_url).returncode == 0
    healthy = cli("status", db_url=db_url)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stderr == ""
    assert "stalled kinds      none" in healthy.stdout

    cli("propose", "--agent", "brain", "--title", "waits", "--step", "crawl", db_url=db_url)
    conn.execute("update ops_mission_steps set run_after = now() - interval '20 minutes' where kind = 'crawl'")
    assert cli("heartbeat", db_url=db_url).returncode == 0  # opens the stall episode
    stalled = cli("status", db_url=db_url)
    assert stalled.returncode == 5
    assert "stalled kinds      crawl (no worker, since" in stalled.stdout
    assert "needs attention: crawl stalled (no worker): 1 ready step(s), the oldest waiting 20 min" in stalled.stderr
    as_json = cli("status", "--json", db_url=db_url)
    assert as_json.returncode == 5, "scripts get the same exit code"
    assert json.loads(as_json.stdout)["alerts"]["stalled_kinds"] == 1

    conn.execute("update ops_mission_steps set status = 'cancelled', finished_at = now() where kind = 'crawl'")
    assert cli("heartbeat", db_url=db_url).returncode == 0  # closes it
    assert cli("status", db_url=db_url).returncode == 0
    cli("policy", "set", "alerts", '{"heartbeat_age_seconds": 10}', db_url=db_url)
    conn.execute("update ops_action_runs set started_at = started_at - interval '1 minute'")
    late = cli("status", db_url=db_url)
    assert late.returncode == 5
    assert "LATE" in late.stdout
    assert "needs attention: heartbeat late: the last ran" in late.stderr
    assert "(limit 10 s)" in late.stderr


def test_workers_lists_live_workers_their_kinds_steps_and_last_seen(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute("""select ops_worker_heartbeat('{"worker_id": "vps-1", "kinds": ["crawl"], "concurrency": 4,
                    "host": "box", "version": "0.2.0"}')""")
    conn.execute("""select ops_worker_heartbeat('{"worker_id": "gone", "kinds": ["analyze"]}')""")
    conn.execute("update ops_workers set last_seen_at = now() - interval '1 hour' where worker_id = 'gone'")
    created = json.loads(
        cli("propose", "--agent", "brain", "--title", "Run", "--step", "crawl", "--json", db_url=db_url).stdout
    )
    step_id = conn.execute(
        "select id from ops_mission_steps where mission_id = %s", (created["mission_id"],)
    ).fetchone()
    assert step_id is not None
    conn.execute("select ops_claim_next_step('vps-1', array['crawl'])")

    table = cli("workers", db_url=db_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["WORKER", "LIVE", "KINDS", "RUNNING", "SLOTS", "LAST", "SEEN", "HOST", "VERSION"]
    assert len(lines) == 2, "only live workers"
    assert lines[1].split()[:6] == ["vps-1", "yes", "crawl", f"#{step_id[0]}", "crawl", "1/4"]
    assert lines[1].split()[-4:] == ["s", "ago", "box", "0.2.0"]
    everyone = json.loads(cli("workers", "--all", "--json", db_url=db_url).stdout)
    assert [(w["worker_id"], w["live"]) for w in everyone] == [("vps-1", True), ("gone", False)]
    assert everyone[0]["running"][0]["step_id"] == step_id[0]
    assert everyone[0]["kinds"] == ["crawl"]
    status = cli("status", db_url=db_url)
    line = rf"^workers live       vps-1 \(crawl\): 1 running \(#{step_id[0]} crawl\), seen \d+ s ago$"
    assert re.search(line, status.stdout, re.M), status.stdout


def spending_day(db_url: str) -> str:
    """brain spends 0.75 USD (over its 0.5 budget) on a crawl; growth 120 tokens on an analyze and runs a crawl,
    which is at its max_running of 1 with another crawl waiting. Returns today's UTC date."""
    with Ops(direct_settings(db_url)) as ops:
        ops.set_policy("budgets", {"daily_usd": 10, "agent_daily_usd": 0.5}, "test")
        policy = ops.get_policy("worker_policy").value
        ops.set_policy("worker_policy", {**policy, "kinds": {"crawl": {"max_running": 1, "per_minute": 5}}}, "test")
        ops.propose("brain", "crawl", [step("crawl")])
        ops.propose("growth", "analyze", [step("analyze")])
        for n in range(2):
            ops.propose("growth", f"crawl {n}", [step("crawl")])
        [crawl] = ops.claim("w", ["crawl"], max_steps=5)
        ops.complete(crawl.id, crawl.attempt, usage=Usage(cost_usd=0.75, model="big-model"))
        [analyze] = ops.claim("w", ["analyze"])
        ops.complete(analyze.id, analyze.attempt, usage=Usage(tokens_in=100, tokens_out=20))
        assert len(ops.claim("w", ["crawl"], max_steps=5)) == 1, "max_running 1"
        today = ops.status().spend_today
        assert today is not None
        return today.day


def words(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_spend_shows_each_agent_s_day_against_its_budget_for_people_and_scripts(db_url: str) -> None:
    day = spending_day(db_url)
    table = cli("spend", db_url=db_url)
    assert table.returncode == 0, table.stderr
    assert words(table.stdout) == [
        ["budgets", '{"agent_daily_usd":', "0.5,", '"daily_usd":', "10}"],
        ["DAY", "AGENT", "USD", "TOKENS", "IN", "OUT", "STEPS", "BUDGET"],
        [day, "all", "agents", "0.75/10", "120", "100", "20", "2", "-"],
        [day, "brain", "0.75/0.5", "0", "0", "0", "1", "EXHAUSTED"],
        [day, "growth", "0/0.5", "120", "100", "20", "1", "-"],
    ]
    as_json = cli("spend", "--days", "1", "--json", db_url=db_url)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["budgets"] == {"daily_usd": 10, "agent_daily_usd": 0.5}
    assert [(d["day"], d["agent_id"], d["cost_usd"], d["limit_usd"], d["exhausted"]) for d in body["days"]] == [
        (day, "*", 0.75, 10, False),
        (day, "brain", 0.75, 0.5, True),
        (day, "growth", 0, 0.5, False),
    ]
    assert body["days"][2] == {
        "agent_id": "growth",
        "cost_usd": 0,
        "tokens_in": 100,
        "tokens_out": 20,
        "steps": 1,
        "limit_usd": 0.5,
        "limit_tokens": None,
        "exhausted": False,
        "day": day,
    }
    refused = cli("spend", "--days", "0", db_url=db_url)
    assert refused.returncode == 2
    assert "days must be from 1 to 366" in refused.stderr


def test_status_shows_the_kind_limits_and_today_s_spend_without_changing_its_exit_code(db_url: str) -> None:
    day = spending_day(db_url)
    assert cli("heartbeat", db_url=db_url).returncode == 0
    status = cli("status", db_url=db_url)
    assert status.returncode == 0, "an exhausted budget is shown, not alerted on"
    assert status.stderr == ""
    shown = words(status.stdout)
    limits = shown.index(["kind", "limits", "(worker_policy.kinds)"])
    assert shown[limits + 1 : limits + 3] == [
        ["KIND", "RUNNING", "LAST", "MINUTE", "QUEUED"],
        ["crawl", "1/1", "2/5", "1"],
    ]
    spend = shown.index(
        ["spend", "today", f"({day}", "UTC;", "budgets", '{"agent_daily_usd":', "0.5,", '"daily_usd":', "10})"]
    )
    assert shown[spend + 1 : spend + 5] == [
        ["AGENT", "USD", "TOKENS", "IN", "OUT", "STEPS", "BUDGET"],
        ["all", "agents", "0.75/10", "120", "100", "20", "2", "-"],
        ["brain", "0.75/0.5", "0", "0", "0", "1", "EXHAUSTED"],
        ["growth", "0/0.5", "120", "100", "20", "1", "-"],
    ]
    as_json = cli("status", "--json", db_url=db_url)
    assert as_json.returncode == 0
    body = json.loads(as_json.stdout)
    assert body["limits"] == {"crawl": {"running": 1, "queued": 1, "max_running": 1, "last_minute": 2, "per_minute": 5}}
    assert body["spend_today"]["day"] == day
    assert [(a["agent_id"], a["exhausted"]) for a in body["spend_today"]["agents"]] == [
        ("*", False),
        ("brain", True),
        ("growth", False),
    ]
