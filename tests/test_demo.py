"""`agent-ops demo`: the live loop closes on a fresh database — trigger and reaction proposals become missions."""

from __future__ import annotations

import io
from pathlib import Path

import psycopg

from agent_ops import demo


def test_the_demo_closes_the_loop(db_url: str, tmp_path: Path, conn: psycopg.Connection) -> None:
    out = io.StringIO()
    assert demo.run(db_url, 12, tmp_path, out) == 0, out.getvalue() + (tmp_path / "demo-worker.log").read_text()
    text = out.getvalue()
    assert "Demo summary after" in text
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
