"""`agent-ops demo`: the live loop closes on a fresh database — trigger and reaction proposals become missions —
and the ops console is served beside it."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import httpx
import psycopg

from agent_ops import Secret, demo
from agent_ops.console import ConsoleAccess


def sign_in_and_read_proposals(base: str, key: str) -> str:
    with httpx.Client(base_url=base, timeout=10) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
        assert csrf
        signed = client.post("/console/login", data={"csrf": csrf.group(1), "key": key})
        assert signed.status_code == 303
        return client.get("/console/proposals").text


def test_the_demo_closes_the_loop_and_serves_the_console(db_url: str, tmp_path: Path, conn: psycopg.Connection) -> None:
    out = io.StringIO()
    access = ConsoleAccess(Secret("demo-console-key"))
    codes: list[int] = []
    runner = threading.Thread(
        target=lambda: codes.append(demo.run(db_url, 12, tmp_path, out, console=access, console_port=0))
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not (found := re.search(r"console (http://127\.0\.0\.1:\d+)/console/", out.getvalue())):
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.05)
    base = found.group(1)
    # The demo's publishing rule is not auto-approved: its proposal waits in the console for a human.
    deadline = time.monotonic() + 10
    while "Publish the " not in (page := sign_in_and_read_proposals(base, "demo-console-key")):
        assert time.monotonic() < deadline, page
        time.sleep(0.5)
    runner.join(timeout=60)
    assert codes == [0], out.getvalue() + (tmp_path / "demo-worker.log").read_text()
    text = out.getvalue()
    assert "Demo summary after" in text
    assert "demo-console-key" not in text, "the key itself is never printed"
    completed: dict[str, int] = dict(
        conn.execute(
            "select p.source, count(*) from ops_missions m join ops_mission_proposals p on p.id = m.proposal_id "
            "where m.status = 'succeeded' group by 1"
        ).fetchall()
    )
    assert completed.get("trigger", 0) >= 2
    assert completed.get("reaction", 0) >= 2
    reactions: dict[str, int] = dict(
        conn.execute("select pattern, count(*) from ops_agent_reactions group by 1").fetchall()
    )
    assert set(reactions) == {"demo_tweet_posted", "demo_mission_failed"}
    assert "worker stopped" in (tmp_path / "demo-worker.log").read_text()
    with httpx.Client() as client:
        try:
            client.get(base, timeout=1)
            raise AssertionError("the console stops with the demo")
        except httpx.ConnectError:
            pass
