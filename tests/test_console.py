"""The ops console over real HTTP (uvicorn in a thread, httpx) against a real database.

Access (key, session, CSRF), escaping, and each page and action reaching the database through agent_ops.
The browser journey is in test_console_browser.py.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agent_ops import Ops, Secret, Settings, step
from agent_ops.console import ConsoleAccess
from agent_ops.console.app import POLICY_FORM_BYTES, TRIGGER_FORM_BYTES
from agent_ops.server import BackgroundServer, create_app
from agent_ops.throttle import KeyThrottle
from tests.kit.database import scalar
from tests.kit.settings import direct_settings

KEY = "console-key-for-tests-only"
HOSTILE = "<script>alert('owned')</script><img src=x onerror=alert(1)>"
ESCAPED = "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
PAGES = (
    "/console/proposals",
    "/console/missions",
    "/console/events",
    "/console/triggers",
    "/console/policy",
    "/console/health",
)


@pytest.fixture
def ops(db_url: str) -> Iterator[Ops]:
    with Ops(direct_settings(db_url)) as client:
        yield client


FORM = {"content-type": "application/x-www-form-urlencoded"}


@contextmanager
def console(
    ops: Ops, key: str | None = KEY, forwarded_allow_ips: str | None = None, **access: Any
) -> Iterator[httpx.Client]:
    """The app as `agent-ops serve` builds it, with the console key `key`; a client keeping its cookies."""
    app = create_app(ops, console=ConsoleAccess(Secret(key) if key else None, **access))
    server = BackgroundServer(app, forwarded_allow_ips=forwarded_allow_ips)
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def browser(ops: Ops) -> Iterator[httpx.Client]:
    with console(ops) as client:
        yield client


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries a CSRF token"
    return found.group(1)


def sign_in(client: httpx.Client, key: str = KEY, name: str = "ada", next_path: str = "") -> httpx.Response:
    token = csrf_in(client.get("/console/login").text)
    return client.post("/console/login", data={"csrf": token, "key": key, "name": name, "next": next_path})


def sign_in_as(client: httpx.Client, key: str, headers: dict[str, str]) -> httpx.Response:
    token = csrf_in(client.get("/console/login", headers=headers).text)
    return client.post("/console/login", data={"csrf": token, "key": key}, headers=headers)


def signed_in(client: httpx.Client) -> httpx.Client:
    assert sign_in(client).status_code == 303
    return client


def token(client: httpx.Client, page: str = "/console/proposals") -> str:
    return csrf_in(client.get(page).text)


def pending(ops: Ops, title: str = "Post the launch tweet") -> int:
    """post_tweet is not auto-approved by supabase/seed.sql's policy: the proposal waits for a human."""
    result = ops.propose("twitter-alt", title, [step("draft_tweet"), step("post_tweet", depends_on=[0])])
    assert result.status == "pending"
    return result.proposal_id


def proposal_status(conn: psycopg.Connection, proposal_id: int) -> tuple[str, str | None, str | None]:
    row = conn.execute(
        "select status, rejection_reason, decided_by from ops_mission_proposals where id = %s", (proposal_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


TRIGGER_RULE: dict[str, Any] = {
    "name": "quiet-day",
    "trigger_event": "absence",
    "conditions": {"event_type": "content:published", "lookback_minutes": 1440},
    "action_config": {"agent_id": "observer", "title": "Nothing published today", "steps": [{"kind": "analyze"}]},
}


def trigger_forms() -> dict[str, dict[str, str]]:
    """Every trigger-rule form with fields that would change something if the form were accepted."""
    document = json.dumps({**TRIGGER_RULE, "enabled": True})
    return {
        "/console/triggers/save": {"value": document, "editor": ""},
        "/console/triggers/preview": {"value": document, "editor": ""},
        "/console/triggers/mission_failed/enable": {},
        "/console/triggers/proactive_research/disable": {},
        "/console/triggers/tweet_high_engagement/delete": {},
    }


def trigger_state(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Every rule with its switch and definition, and the trigger:* events: what a trigger form could change."""
    rules = conn.execute("select name, enabled, updated_at from ops_trigger_rules order by name").fetchall()
    return [*rules, *conn.execute("select id, type from ops_agent_events where type like 'trigger:%' order by id")]


# --- access ----------------------------------------------------------------------------------------------------


def test_without_a_session_every_page_sends_you_to_sign_in_and_shows_no_data(browser: httpx.Client, ops: Ops) -> None:
    pending(ops, "Secret plan")
    for page in (*PAGES, "/console/missions/1", "/console/events/feed?after_id=0"):
        response = browser.get(page)
        assert response.status_code == 303, page
        assert response.headers["location"].startswith("/console/login?next=")
        assert "Secret plan" not in response.text
    fetched = browser.get("/console/events/feed?after_id=0", headers={"x-console-fetch": "1"})
    assert fetched.status_code == 401
    login = browser.get("/console/login")
    assert "Secret plan" not in login.text
    assert 'type="password"' in login.text


@pytest.mark.parametrize("key", ["", "wrong-key", KEY + "x", KEY[:-1], KEY.upper()])
def test_a_wrong_or_missing_key_opens_nothing(browser: httpx.Client, ops: Ops, key: str) -> None:
    pending(ops, "Secret plan")
    response = sign_in(browser, key=key)
    assert response.status_code == 401
    assert "Wrong key." in response.text
    assert "Secret plan" not in response.text
    assert browser.get("/console/proposals").status_code == 303, "still no session"


def test_the_right_key_starts_an_httponly_samesite_session(browser: httpx.Client, ops: Ops) -> None:
    pending(ops, "Visible plan")
    response = sign_in(browser, next_path="/console/policy")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/policy"
    cookie = response.headers["set-cookie"].lower()
    assert "agent_ops_console=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    page = browser.get("/console/proposals")
    assert page.status_code == 200
    assert "Visible plan" in page.text
    assert KEY not in page.text, "the key is never echoed"
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("key", [None, ""])
def test_without_any_key_the_console_is_closed_never_open(ops: Ops, key: str | None) -> None:
    pending(ops, "Secret plan")
    with console(ops, key=key) as client:
        for page in ("/console/login", *PAGES, "/console/events/feed?after_id=0"):
            response = client.get(page)
            assert response.status_code == 503, page
            assert "Secret plan" not in response.text
        assert client.post("/console/login", data={"key": "", "csrf": ""}).status_code == 503


def cookie_of(client: httpx.Client) -> dict[str, str]:
    value = client.cookies.get("agent_ops_console")
    assert value
    return {"cookie": f"agent_ops_console={value}"}


def test_sessions_are_signed_per_process_unless_a_session_secret_is_shared(ops: Ops) -> None:
    """The cookie is not signed with anything derived from the key: an anonymous visitor's cookie cannot be
    used to test key guesses offline. A shared CONSOLE_SESSION_SECRET carries sessions across processes."""
    shared = Secret("a-shared-session-secret")
    with console(ops, key="first-key", session_secret=shared) as first:
        assert sign_in(first, key="first-key").status_code == 303
        session = cookie_of(first)
    with console(ops, key="first-key") as own_secret:
        assert own_secret.get("/console/proposals", headers=session).status_code == 303
    with console(ops, key="first-key", session_secret=shared) as restarted:
        assert restarted.get("/console/proposals", headers=session).status_code == 200
    with console(ops, key="second-key", session_secret=shared) as rotated:
        assert rotated.get("/console/proposals", headers=session).status_code == 303, "a new key ends sessions"


def test_sign_out_ends_the_session_even_for_a_copied_cookie(browser: httpx.Client) -> None:
    signed_in(browser)
    copied = cookie_of(browser)
    assert browser.post("/console/logout", data={"csrf": token(browser)}).status_code == 303
    assert browser.get("/console/proposals").status_code == 303
    with httpx.Client(base_url=str(browser.base_url)) as thief:
        assert thief.get("/console/proposals", headers=copied).status_code == 303


def test_a_session_ends_after_its_lifetime_however_busy(ops: Ops) -> None:
    with console(ops, session_seconds=2) as client:
        signed_in(client)
        started = time.monotonic()
        replayed = cookie_of(client)
        with httpx.Client(base_url=str(client.base_url)) as other:
            while time.monotonic() - started < 1.5:  # every answer re-sends the cookie: the clock must not reset
                assert client.get("/console/policy").status_code == 200
                replayed = cookie_of(client)
                time.sleep(0.2)
            time.sleep(0.7)
            assert other.get("/console/policy", headers=replayed).status_code == 303


def test_wrong_keys_are_throttled_per_client(browser: httpx.Client) -> None:
    for _ in range(5):
        assert sign_in(browser, key="guess").status_code == 401
    refused = sign_in(browser)
    assert refused.status_code == 429
    assert "Too many wrong keys" in refused.text
    assert browser.get("/console/proposals").status_code == 303


def test_a_throttled_client_is_refused_before_its_form_is_read(browser: httpx.Client) -> None:
    for _ in range(5):
        assert sign_in(browser, key="guess").status_code == 401
    unread = browser.post("/console/login", content=b"csrf=" + b"&" * 60_000, headers=FORM)
    assert unread.status_code == 429, "no CSRF check, no parsing: the throttle comes first"


def test_forwarded_for_does_not_pick_a_new_client_unless_the_proxy_is_trusted(ops: Ops) -> None:
    """uvicorn believed X-Forwarded-For from 127.0.0.1 by default: a local client rotating it was never throttled."""
    with console(ops) as client:
        codes = [sign_in_as(client, "guess", {"x-forwarded-for": f"203.0.113.{n}"}).status_code for n in range(1, 8)]
        assert codes[:5] == [401] * 5
        assert codes[5:] == [429, 429]
    with console(ops, forwarded_allow_ips="127.0.0.1") as behind_proxy:
        for _ in range(5):
            assert sign_in_as(behind_proxy, "guess", {"x-forwarded-for": "203.0.113.1"}).status_code == 401
        assert sign_in_as(behind_proxy, KEY, {"x-forwarded-for": "203.0.113.1"}).status_code == 429
        assert sign_in_as(behind_proxy, KEY, {"x-forwarded-for": "203.0.113.2"}).status_code == 303, (
            "behind a trusted proxy each forwarded client counts on its own"
        )


def test_wrong_keys_from_many_addresses_trip_the_global_cap(ops: Ops, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ops, console=ConsoleAccess(Secret(KEY)), throttle=KeyThrottle(global_limit=3))
    with BackgroundServer(app) as server:

        def from_address(address: str, key: str) -> int:
            transport = httpx.HTTPTransport(local_address=address)
            with httpx.Client(base_url=server.url, transport=transport) as client:
                return sign_in(client, key=key).status_code

        with caplog.at_level(logging.WARNING, logger="agent_ops.throttle"):
            assert [from_address(f"127.0.0.{n}", "guess") for n in (2, 3, 4)] == [401, 401, 401]
            assert from_address("127.0.0.5", KEY) == 429, "a fresh address with the right key is refused"
    assert any("key throttle tripped" in r.getMessage() for r in caplog.records)


def test_actions_without_a_session_are_refused(browser: httpx.Client, ops: Ops, conn: psycopg.Connection) -> None:
    proposal_id = pending(ops)
    csrf = csrf_in(browser.get("/console/login").text)  # a valid token, but no sign-in
    for path in (f"/console/proposals/{proposal_id}/approve", "/console/system", "/console/policy/system"):
        response = browser.post(path, data={"csrf": csrf, "enabled": "false", "value": '{"enabled": false}'})
        assert response.status_code == 401, path
    assert proposal_status(conn, proposal_id)[0] == "pending"
    assert ops.get_policy("system").value == {"enabled": True}
    before = trigger_state(conn)
    for path, fields in trigger_forms().items():
        assert browser.post(path, data={"csrf": csrf, **fields}).status_code == 401, path
    assert trigger_state(conn) == before


def test_sign_in_returns_to_the_page_asked_for_with_its_filters(browser: httpx.Client) -> None:
    sent = browser.get("/console/missions?status=failed")
    assert sent.status_code == 303
    login = browser.get(sent.headers["location"])
    assert 'name="next" value="/console/missions?status=failed"' in login.text
    wrong = sign_in(browser, key="wrong", next_path="/console/missions?status=failed")
    assert 'name="next" value="/console/missions?status=failed"' in wrong.text, "kept after a wrong key"
    right = sign_in(browser, next_path="/console/missions?status=failed")
    assert right.headers["location"] == "/console/missions?status=failed"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/elsewhere", "/console\\..\\x"])
def test_sign_in_never_redirects_outside_the_console(browser: httpx.Client, target: str) -> None:
    response = sign_in(browser, next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/"


def test_a_login_form_without_its_csrf_token_is_refused(browser: httpx.Client) -> None:
    browser.get("/console/login")
    response = browser.post("/console/login", data={"key": KEY})
    assert response.status_code == 403
    assert browser.get("/console/proposals").status_code == 303


# --- CSRF on every form ------------------------------------------------------------------------------------------


def test_forms_posted_without_the_csrf_token_are_refused_and_change_nothing(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    proposal_id = pending(ops)
    running = ops.propose("brain", "Research", [step("crawl")])
    assert running.mission_id is not None
    signed_in(browser)
    with console(ops) as other:
        other_session_token = csrf_in(other.get("/console/login").text)
    forms = {
        f"/console/proposals/{proposal_id}/approve": {},
        f"/console/proposals/{proposal_id}/reject": {"reason": "no"},
        f"/console/missions/{running.mission_id}/cancel": {"reason": "no"},
        "/console/policy/system": {"value": '{"enabled": false}'},
        "/console/system": {"enabled": "false"},
        "/console/kinds/crawl/enable": {},
        **trigger_forms(),
        "/console/logout": {},
    }
    before = trigger_state(conn)
    for path, fields in forms.items():
        for csrf in (None, "", "forged", other_session_token):
            data = fields if csrf is None else {**fields, "csrf": csrf}
            response = browser.post(path, data=data, headers={"x-console-fetch": "1"})
            assert response.status_code == 403, (path, csrf)
    assert proposal_status(conn, proposal_id)[0] == "pending"
    assert ops.mission(running.mission_id).status in ("approved", "running")
    assert ops.get_policy("system").value == {"enabled": True}
    assert trigger_state(conn) == before, "no trigger rule was created, switched or deleted"
    assert browser.get("/console/proposals").status_code == 200, "still signed in: logout was refused too"


# --- proposals ---------------------------------------------------------------------------------------------------


def test_pending_proposals_show_their_steps_and_the_gate_verdict(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    first = pending(ops, "Within the gates")
    signed_in(browser)
    page = browser.get("/console/proposals").text
    assert "Within the gates" in page
    assert "<code>draft_tweet</code>" in page
    assert "<code>post_tweet</code>" in page
    assert "Gates now: pass" in page
    ops.set_policy("step_kind_gates", {"post_tweet": {"daily_limit": 0}}, "test")
    page = browser.get("/console/proposals").text
    assert "would reject" in page
    assert "daily quota for post_tweet reached" in page
    assert proposal_status(conn, first)[0] == "pending", "showing a verdict decides nothing"


def test_approve_in_place_returns_the_mission(browser: httpx.Client, ops: Ops, conn: psycopg.Connection) -> None:
    proposal_id = pending(ops)
    signed_in(browser)
    response = browser.post(
        f"/console/proposals/{proposal_id}/approve", data={"csrf": token(browser)}, headers={"x-console-fetch": "1"}
    )
    assert response.status_code == 200
    status, _, decided_by = proposal_status(conn, proposal_id)
    assert (status, decided_by) == ("accepted", "console:ada")
    mission_id = conn.execute("select id from ops_missions where proposal_id = %s", (proposal_id,)).fetchone()
    assert mission_id is not None
    assert f"mission #{mission_id[0]} created" in response.text
    assert f'href="/console/missions/{mission_id[0]}"' in response.text


def test_an_approval_the_gates_refuse_comes_back_rejected_with_the_reason(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    proposal_id = pending(ops)
    signed_in(browser)
    csrf = token(browser)
    ops.set_policy("step_kind_gates", {"post_tweet": {"daily_limit": 0}}, "test")
    response = browser.post(
        f"/console/proposals/{proposal_id}/approve", data={"csrf": csrf}, headers={"x-console-fetch": "1"}
    )
    assert response.status_code == 200
    assert "was rejected by the gates: daily quota for post_tweet reached" in response.text
    assert proposal_status(conn, proposal_id)[0] == "rejected"


def test_reject_with_a_reason_without_script_flashes_and_redirects(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    proposal_id = pending(ops)
    signed_in(browser)
    response = browser.post(
        f"/console/proposals/{proposal_id}/reject", data={"csrf": token(browser), "reason": "off-brand"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/proposals"
    assert proposal_status(conn, proposal_id) == ("rejected", "off-brand", "console:ada")
    page = browser.get("/console/proposals").text
    assert f"Proposal #{proposal_id} rejected: off-brand" in page


def test_deciding_twice_shows_the_sql_conflict(browser: httpx.Client, ops: Ops) -> None:
    proposal_id = pending(ops)
    ops.reject(proposal_id, "first", "test")
    signed_in(browser)
    response = browser.post(
        f"/console/proposals/{proposal_id}/approve", data={"csrf": token(browser)}, headers={"x-console-fetch": "1"}
    )
    assert response.status_code == 200
    assert "not pending" in response.text


# --- escaping ----------------------------------------------------------------------------------------------------


def test_everything_shown_is_escaped(browser: httpx.Client, ops: Ops, conn: psycopg.Connection) -> None:
    pending(ops, HOSTILE)
    accepted = ops.propose("brain", HOSTILE, [step("crawl", {"note": HOSTILE})], description=HOSTILE)
    assert accepted.mission_id is not None
    ops.emit_event("tweet:posted", "twitter-alt", title=HOSTILE, tags=["tweet"], mission_id=accepted.mission_id)
    ops.reject(pending(ops, "second"), HOSTILE, "test")
    [claimed] = ops.claim("worker-1", ["crawl"])
    ops.fail(claimed.id, claimed.attempt, HOSTILE, retryable=False)
    ops.set_policy("worker:analyze", {"enabled": False, "reason": HOSTILE}, "test")
    ops.set_policy("system", {"enabled": False, "reason": HOSTILE}, "test")
    conn.execute("select ops_worker_heartbeat(jsonb_build_object('worker_id', 'w1', 'host', %s::text))", (HOSTILE,))
    ops.set_trigger_rule({**TRIGGER_RULE, "action_config": {**TRIGGER_RULE["action_config"], "title": HOSTILE}}, "t")
    conn.execute(
        "insert into ops_notifications (sink, event_id, event_type, matched, status, last_error, dead_at)"
        " values ('ops', 1, 'mission:failed', 'type', 'dead', %s, now())",
        (HOSTILE,),
    )
    signed_in(browser)
    pages = {
        "/console/proposals": 3,  # pending title, rejection reason, the kill switch's reason
        "/console/missions": 2,
        f"/console/missions/{accepted.mission_id}": 4,  # title, step error, event title, the switch
        "/console/events": 2,
        "/console/triggers": 1,  # the rule's title in its editor
        "/console/policy": 2,  # the system and worker:analyze values
        # the disabled kind's reason, crawl's last error (one failure), a worker's host, a dead letter, the switch
        "/console/health": 5,
        "/console/events/feed?after_id=0": 1,
    }
    for page, at_least in pages.items():
        text = browser.get(page).text
        assert "<script>alert" not in text, page
        assert "<img src=x" not in text, page
        shown = text.count(ESCAPED) + text.count(ESCAPED.replace("&#39;", "\\u0026#39;"))
        shown += text.count("alert(&#39;owned&#39;)") if page == "/console/policy" else 0
        assert shown >= at_least, (page, shown)


# --- missions ----------------------------------------------------------------------------------------------------


def test_missions_filter_by_status_and_agent_and_show_a_timeline(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    done = ops.propose("brain", "Finished research", [step("crawl"), step("analyze", depends_on=[0])])
    other = ops.propose("growth", "Still queued", [step("crawl")])
    assert done.mission_id
    assert other.mission_id
    [first] = ops.claim("worker-7", ["crawl"], max_steps=1)
    assert first.mission_id == done.mission_id, "the older mission's step is claimed first"
    ops.complete(first.id, first.attempt, {"pages": 3})
    [second] = ops.claim("worker-7", ["analyze"])
    ops.fail(second.id, second.attempt, "model timed out", retryable=False)
    signed_in(browser)
    failed = browser.get("/console/missions?status=failed").text
    assert "Finished research" in failed
    assert "Still queued" not in failed
    by_agent = browser.get("/console/missions?agent=growth").text
    assert "Still queued" in by_agent
    assert "Finished research" not in by_agent
    page = browser.get(f"/console/missions/{done.mission_id}").text
    assert "worker worker-7" in page
    assert "model timed out" in page
    assert "&#34;pages&#34;: 3" in page or '"pages": 3' in page
    assert "attempt 1 of" in page
    assert "Cancel mission" not in page, "a finished mission cannot be cancelled"
    assert "Cancel mission" in browser.get(f"/console/missions/{other.mission_id}").text
    assert browser.get("/console/missions/999999").status_code == 404


def test_cancel_a_running_mission(browser: httpx.Client, ops: Ops) -> None:
    result = ops.propose("brain", "Long research", [step("crawl"), step("analyze", depends_on=[0])])
    assert result.mission_id is not None
    signed_in(browser)
    csrf = token(browser, f"/console/missions/{result.mission_id}")
    response = browser.post(f"/console/missions/{result.mission_id}/cancel", data={"csrf": csrf, "reason": "scope"})
    assert response.status_code == 303
    assert ops.mission(result.mission_id).status == "cancelled"
    page = browser.get(f"/console/missions/{result.mission_id}").text
    assert f"Mission #{result.mission_id} is cancelled." in page


# --- events ------------------------------------------------------------------------------------------------------


def test_the_events_feed_returns_what_came_after_the_newest_row_shown(browser: httpx.Client, ops: Ops) -> None:
    signed_in(browser)
    page = browser.get("/console/events?type=tweet:posted").text
    last = int(re.search(r'data-last-id="(\d+)"', page).group(1))  # type: ignore[union-attr]
    ops.emit_event("tweet:posted", "twitter-alt", title="first", tags=["tweet"])
    ops.emit_event("content:published", "brain", title="other type", tags=["post"])
    ops.emit_event("tweet:posted", "twitter-alt", title="second", tags=["tweet"])
    feed = browser.get(f"/console/events/feed?type=tweet:posted&after_id={last}").json()
    assert feed["count"] == 2
    assert feed["html"].index("second") < feed["html"].index("first"), "newest on top"
    assert "other type" not in feed["html"]
    again = browser.get(f"/console/events/feed?type=tweet:posted&after_id={feed['last_id']}").json()
    assert again["count"] == 0
    by_tag = browser.get("/console/events?tag=post").text
    assert "other type" in by_tag
    assert "second" not in by_tag
    by_agent = browser.get("/console/events?agent=brain").text
    assert "other type" in by_agent
    assert browser.get("/console/events/feed?after_id=x").status_code == 400


@pytest.mark.parametrize(
    ("page", "parameter"),
    [
        ("/console/events/feed?after_id=99999999999999999999", "after_id"),
        ("/console/events/feed?after_id=-99999999999999999999", "after_id"),
        ("/console/missions/99999999999999999999", "mission_id"),
    ],
)
def test_ids_beyond_bigint_are_refused_naming_the_parameter_not_the_sql(
    browser: httpx.Client, page: str, parameter: str
) -> None:
    signed_in(browser)
    for headers in ({}, {"x-console-fetch": "1"}):
        response = browser.get(page, headers=headers)
        assert response.status_code == 400, (page, headers)
        assert f"{parameter} must be an integer" in response.text
        assert "ops_" not in response.text, "no SQL function signature"
    if "/feed" not in page:  # the feed answers JSON even to a browser; pages explain themselves
        assert "<h1>Bad request</h1>" in browser.get(page).text


@pytest.mark.parametrize(
    "path",
    [
        "/console/proposals/99999999999999999999/approve",
        "/console/proposals/99999999999999999999/reject",
        "/console/missions/99999999999999999999/cancel",
    ],
)
def test_actions_on_ids_beyond_bigint_are_refused_naming_the_parameter(browser: httpx.Client, path: str) -> None:
    signed_in(browser)
    response = browser.post(path, data={"csrf": token(browser)}, headers={"x-console-fetch": "1"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(path.split("/")[2].rstrip("s") + "_id must be an integer")


@pytest.mark.parametrize("name", ["console.js%00.css", "console.js%00", "%00", "..%2f..%2fauth.py"])
def test_odd_static_names_are_not_found_not_errors(browser: httpx.Client, name: str) -> None:
    response = browser.get(f"/console/static/{name}")
    assert response.status_code == 404
    assert "Traceback" not in response.text


# --- policy and the kill switch ------------------------------------------------------------------------------------


def test_a_policy_value_saves_through_ops_set_policy(browser: httpx.Client, ops: Ops) -> None:
    signed_in(browser)
    response = browser.post(
        "/console/policy/max_active_missions", data={"csrf": token(browser), "value": '{"limit": 7}'}
    )
    assert response.status_code == 303
    saved = ops.get_policy("max_active_missions")
    assert saved.value == {"limit": 7}
    assert saved.updated_by == "console:ada"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"limit": -1}', "limit"),
        ('{"limit": "many"}', "limit"),
        ('{"limit": 3', "not valid JSON"),
        ("[]", "must be a JSON object"),
    ],
)
def test_a_refused_policy_value_shows_the_reason_and_changes_nothing(
    browser: httpx.Client, ops: Ops, text: str, message: str
) -> None:
    before = ops.get_policy("max_active_missions").value
    signed_in(browser)
    response = browser.post("/console/policy/max_active_missions", data={"csrf": token(browser), "value": text})
    assert response.status_code == 400
    assert "Refused:" in response.text
    assert message in response.text
    assert text.replace('"', "&#34;") in response.text, "the draft stays in the editor"
    assert ops.get_policy("max_active_missions").value == before


def test_the_largest_policy_the_sql_accepts_fits_the_form_and_more_is_413(browser: httpx.Client, ops: Ops) -> None:
    """A reaction matrix just under the SQL's 256 KiB, in characters that form encoding triples, still saves;
    a larger value is refused by the SQL with its message; a larger form is 413 before it is read."""
    pattern = {"source": "*", "tags": ["tweet"], "target": "brain", "type": "analyze", "probability": 0.5}

    def matrix(count: int, letter: str = "é") -> str:
        patterns = [
            {**pattern, "name": f"p{n}", "cooldown": 1, "title": letter * 100, "payload": {"n": letter * 2000}}
            for n in range(count)
        ]
        return json.dumps({"enabled": False, "patterns": patterns}, ensure_ascii=False)

    value = matrix(60)
    assert 200_000 < len(value.encode()) < 256 * 1024
    signed_in(browser)
    saved = browser.post("/console/policy/reaction_matrix", data={"csrf": token(browser), "value": value})
    assert saved.status_code == 303, saved.text[:300]
    assert len(ops.get_policy("reaction_matrix").value["patterns"]) == 60
    refused = browser.post("/console/policy/reaction_matrix", data={"csrf": token(browser), "value": matrix(150, "x")})
    assert refused.status_code == 400
    assert "value must be at most 262144 bytes of JSON" in refused.text
    too_much = browser.post(
        "/console/policy/reaction_matrix", data={"csrf": token(browser), "value": " " * POLICY_FORM_BYTES}
    )
    assert too_much.status_code == 413
    other_form = browser.post("/console/system", data={"csrf": token(browser), "reason": "x" * 70_000})
    assert other_form.status_code == 413


def test_the_kill_switch_is_on_every_page_and_stops_and_resumes(browser: httpx.Client, ops: Ops) -> None:
    signed_in(browser)
    for page in PAGES:
        assert 'id="kill-switch"' in browser.get(page).text
    stop = browser.post(
        "/console/system",
        data={"csrf": token(browser), "enabled": "false", "reason": "incident", "back": "/missions"},
    )
    assert stop.status_code == 303
    assert stop.headers["location"] == "/console/missions"
    assert ops.get_policy("system").value == {"enabled": False, "reason": "incident (console:ada)"}
    assert "System stopped" in browser.get("/console/health").text
    assert ops.propose("brain", "while stopped", [step("crawl")]).status == "rejected"
    resumed = browser.post(
        "/console/system", data={"csrf": token(browser), "enabled": "true", "back": "//evil.example"}
    )
    assert resumed.headers["location"] == "/console/", "never an open redirect"
    assert ops.get_policy("system").value == {"enabled": True}
    long_reason = browser.post(
        "/console/system", data={"csrf": token(browser), "enabled": "false", "reason": "x" * 900}
    )
    assert long_reason.status_code == 303
    assert len(ops.get_policy("system").value["reason"]) <= 500


def test_a_refused_policy_on_an_unknown_key_or_deep_json_is_explained(browser: httpx.Client) -> None:
    signed_in(browser)
    unknown = browser.post("/console/policy/nonsense", data={"csrf": token(browser), "value": "{}"})
    assert unknown.status_code == 400
    assert "nonsense was not saved: " in unknown.text
    deep = browser.post("/console/policy/system", data={"csrf": token(browser), "value": "[" * 100_000})
    assert deep.status_code == 400
    assert "nested too deeply" in deep.text
    # The kill switch on that answer returns to the policy page, not to the POST-only action.
    assert 'name="back" value="/policy"' in deep.text


# --- trigger rules -----------------------------------------------------------------------------------------------


def trigger_card(page: str, name: str) -> str:
    found = re.search(rf'<article class="card trigger" id="trigger-{re.escape(name)}">(.*?)</article>', page, re.S)
    assert found, f"the page has a card for {name}"
    return found.group(1)


def test_the_triggers_page_lists_rules_with_fire_counts_and_last_and_next_firing(
    browser: httpx.Client, ops: Ops
) -> None:
    ops.set_trigger_enabled("mission_failed", True, "test")
    failed = ops.propose("growth", "doomed", [step("crawl")])
    assert failed.mission_id is not None
    [claimed] = ops.claim("w", ["crawl"])
    ops.fail(claimed.id, claimed.attempt, "HTTP 500", retryable=False)
    ops.heartbeat()
    rule = ops.trigger_rule("mission_failed")
    assert rule.fire_count == 1
    signed_in(browser)
    page = browser.get("/console/triggers").text
    rows = re.sub(r"\s+", " ", re.search(r'<table id="trigger-rules">(.*?)</table>', page, re.S).group(1))  # type: ignore[union-attr]
    assert (
        '<td><a href="#trigger-mission_failed">mission_failed</a></td><td><code>event</code></td> '
        f'<td><span class="badge succeeded">on</span></td> <td>1</td><td>{rule.last_fired_at:%Y-%m-%d %H:%M:%S}</td>'
        f"<td>{rule.next_due_at:%Y-%m-%d %H:%M:%S}</td>"
    ) in rows
    assert '<span class="badge cancelled">off</span></td> <td>0</td><td>-</td><td>-</td>' in rows
    card = trigger_card(page, "mission_failed")
    assert 'action="/console/triggers/mission_failed/disable"' in card
    assert "Disable" in card
    assert f'href="/console/missions/{ops.proposals(status="accepted")[0].mission_id}"' in card, "its latest firing"
    assert "&#34;trigger_event&#34;: &#34;event&#34;" in card, "its definition in the editor"
    assert 'action="/console/triggers/proactive_research/enable"' in trigger_card(page, "proactive_research")
    assert 'data-confirm="Delete the trigger rule mission_failed?' in card
    assert 'id="trigger-new"' in page


def test_trigger_rules_are_saved_switched_and_deleted_through_the_api(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    signed_in(browser)
    saved = browser.post("/console/triggers/save", data={"csrf": token(browser), "value": json.dumps(TRIGGER_RULE)})
    assert saved.status_code == 303
    assert saved.headers["location"] == "/console/triggers#trigger-quiet-day"
    assert ops.trigger_rule("quiet-day").definition() == {
        **TRIGGER_RULE, "cooldown_minutes": 60, "skip_probability": 0, "jitter_minutes": 0, "enabled": False
    }  # fmt: skip
    assert "Trigger rule quiet-day: created." in browser.get("/console/triggers").text
    edited = {**TRIGGER_RULE, "cooldown_minutes": 30}
    browser.post(
        "/console/triggers/save", data={"csrf": token(browser), "value": json.dumps(edited), "editor": "quiet-day"}
    )
    assert "Trigger rule quiet-day: cooldown_minutes." in browser.get("/console/triggers").text
    on = browser.post("/console/triggers/quiet-day/enable", data={"csrf": token(browser)})
    assert (on.status_code, on.headers["location"]) == (303, "/console/triggers#trigger-quiet-day")
    assert ops.trigger_rule("quiet-day").enabled
    assert "Trigger rule quiet-day is on: the heartbeat checks it from now on." in browser.get("/console/triggers").text
    browser.post("/console/triggers/quiet-day/disable", data={"csrf": token(browser)})
    assert not ops.trigger_rule("quiet-day").enabled
    gone = browser.post("/console/triggers/quiet-day/delete", data={"csrf": token(browser)})
    assert gone.status_code == 303
    assert "Trigger rule quiet-day deleted" in browser.get("/console/triggers").text
    events = conn.execute(
        "select type, payload ->> 'updated_by' from ops_agent_events where type like 'trigger:%' order by id"
    ).fetchall()
    assert events == [
        ("trigger:created", "console:ada"),
        ("trigger:updated", "console:ada"),
        ("trigger:enabled", "console:ada"),
        ("trigger:disabled", "console:ada"),
        ("trigger:deleted", "console:ada"),
    ]
    missing = browser.post("/console/triggers/quiet-day/enable", data={"csrf": token(browser)})
    assert missing.status_code == 303
    assert (
        "Trigger rule quiet-day was not changed: trigger rule &#34;quiet-day&#34; not found"
        in browser.get("/console/triggers").text
    )


@pytest.mark.parametrize(
    ("editor", "text", "message"),
    [
        ("mission_failed", '{"name": "mission_failed", "trigger_event": "event", "conditions": {}}',
         "conditions.event_type is required"),
        ("mission_failed", json.dumps({**TRIGGER_RULE, "name": "mission_failed", "trigger_event": "event",
                                        "conditions": {"event_type": "mission:failed", "window": 5}}),
         "conditions.window is not a known field"),
        ("", json.dumps({**TRIGGER_RULE, "action_config": {"agent_id": "observer", "title": "t",
                                                           "steps": [{"kind": "Bad Kind"}]}}),
         "action_config.steps[0].kind must match"),
        ("", '{"name": "x",', "not valid JSON"),
        ("", "[]", "rule must be a JSON object"),
    ],
)  # fmt: skip
def test_a_refused_trigger_rule_shows_the_sql_message_in_its_editor_and_changes_nothing(
    browser: httpx.Client, conn: psycopg.Connection, editor: str, text: str, message: str
) -> None:
    before = trigger_state(conn)
    signed_in(browser)
    for action in ("save", "preview"):
        response = browser.post(
            f"/console/triggers/{action}", data={"csrf": token(browser), "value": text, "editor": editor}
        )
        assert response.status_code == 400, action
        card = trigger_card(response.text, editor or "new")
        assert "Refused: " in card
        assert message.replace('"', "&#34;") in card, (action, card[-800:])
        assert text.replace('"', "&#34;") in card, "the draft stays in its editor"
        assert 'name="back" value="/triggers"' in response.text, "the kill switch returns to the page"
    assert trigger_state(conn) == before


def test_the_dry_run_shows_what_the_editor_s_rule_would_propose_and_saves_nothing(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    before = trigger_state(conn)
    draft = {**ops.trigger_rule("proactive_research").definition(), "conditions": {"topics": ["churn"]}}
    signed_in(browser)
    response = browser.post(
        "/console/triggers/preview",
        data={"csrf": token(browser), "value": json.dumps(draft), "editor": "proactive_research"},
    )
    assert response.status_code == 200
    card = trigger_card(response.text, "proactive_research")
    assert "Dry run: the next heartbeat would not propose (the rule is off)." in card
    assert "Checker: fires whenever due: every 360 minutes plus up to 30 of jitter, topic churn" in card
    assert '<span class="badge accepted">accepted</span>' in card
    assert "Research: churn" in card
    assert "&#34;churn&#34;" in card, "the draft stays in the editor"
    assert trigger_state(conn) == before
    assert ops.trigger_rule("proactive_research").conditions["topics"][0] == "agent architectures"


def test_the_largest_rule_the_sql_accepts_fits_the_form_and_more_is_413(browser: httpx.Client, ops: Ops) -> None:
    """A rule just under the SQL's 64 KiB, in characters that form encoding triples, saves; a larger one is
    refused by the SQL with its message; a larger form is 413 before it is read, for the dry run too."""

    def rule(payload: str) -> str:
        steps = [{"kind": "analyze", "payload": {"n": payload}}]
        return json.dumps({**TRIGGER_RULE, "action_config": {**TRIGGER_RULE["action_config"], "steps": steps}},
                          ensure_ascii=False)  # fmt: skip

    largest = rule("é" * 32_000)
    assert 60_000 < len(largest.encode()) < 64 * 1024
    signed_in(browser)
    saved = browser.post("/console/triggers/save", data={"csrf": token(browser), "value": largest})
    assert saved.status_code == 303, saved.text[-500:]
    assert len(ops.trigger_rule("quiet-day").action_config["steps"][0]["payload"]["n"]) == 32_000
    refused = browser.post("/console/triggers/save", data={"csrf": token(browser), "value": rule("x" * 70_000)})
    assert refused.status_code == 400
    assert "rule must be at most 65536 bytes of JSON" in refused.text
    for action in ("save", "preview"):
        too_much = browser.post(
            f"/console/triggers/{action}", data={"csrf": token(browser), "value": " " * TRIGGER_FORM_BYTES}
        )
        assert too_much.status_code == 413, action
    switch = browser.post("/console/triggers/quiet-day/enable", data={"csrf": token(browser), "x": "y" * 70_000})
    assert switch.status_code == 413, "the other trigger forms keep the ordinary cap"


# --- health ------------------------------------------------------------------------------------------------------


def test_health_shows_heartbeat_runs_queues_workers_and_open_breakers(browser: httpx.Client, ops: Ops) -> None:
    ops.propose("brain", "Queued work", [step("crawl"), step("analyze", depends_on=[0])])
    ops.propose("brain", "More work", [step("crawl")])
    ops.claim("worker-9", ["crawl"], max_steps=1)
    ops.heartbeat()
    ops.set_policy("worker:analyze", {"enabled": False, "reason": "circuit breaker: 3 consecutive failures"}, "w")
    signed_in(browser)
    page = browser.get("/console/health").text
    assert "<td>worker-9</td><td>1</td>" in page
    assert "<td><code>crawl</code></td><td>1</td>" in page
    assert "circuit breaker: 3 consecutive failures" in page
    assert "No heartbeat has run yet" not in page
    assert '<span class="badge succeeded">succeeded</span>' in page
    response = browser.post("/console/kinds/analyze/enable", data={"csrf": token(browser, "/console/health")})
    assert response.status_code == 303
    assert ops.get_policy("worker:analyze").value == {"enabled": True}
    assert "None: every kind is being claimed." in browser.get("/console/health").text


def health_section(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert found, f"the health page has a {table_id} table"
    return re.sub(r"\s+", " ", found.group(1))


def test_health_shows_live_workers_stalls_breakers_with_their_probe_and_dead_letters(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    ops.set_policy("worker_policy", {"circuit_breaker_threshold": 1, "max_attempts": 1}, "test")
    conn.execute("""select ops_worker_heartbeat('{"worker_id": "vps-1", "kinds": ["crawl"], "concurrency": 4,
                    "host": "box", "version": "0.2.0"}')""")
    ops.propose("brain", "Breaks", [step("crawl")])
    ops.propose("brain", "Runs", [step("crawl")])
    broken, running = ops.claim("vps-1", ["crawl"], max_steps=2)
    ops.fail(broken.id, broken.attempt, "upstream 500", retryable=False)  # threshold 1: the breaker opens
    ops.propose("brain", "Waits", [step("analyze")])
    conn.execute("update ops_mission_steps set run_after = now() - interval '30 minutes' where kind = 'analyze'")
    ops.heartbeat()  # opens the stall episode for analyze: no live worker serves it
    conn.execute(
        "insert into ops_notifications (sink, event_id, event_type, matched, status, attempts, last_error, dead_at)"
        " values ('slack-ops', 999999, 'mission:failed', 'type', 'dead', 8, 'HTTP 404 from the sink', now())"
    )
    signed_in(browser)
    page = browser.get("/console/health").text

    attention = re.search(r'<section class="alerts" role="alert".*?</section>', page, re.S)
    assert attention, "what needs a person is at the top"
    assert "analyze stalled (no worker): 1 ready step(s), the oldest waiting 30 min" in attention.group(0)
    workers = health_section(page, "workers")
    assert "<td>vps-1</td> <td><code>crawl</code></td>" in workers
    assert f"#{running.id}</a> <code>crawl</code>" in workers
    assert "<td>1/4</td>" in workers
    assert "box · 0.2.0" in workers
    stalled = health_section(page, "stalled")
    assert "<td><code>analyze</code></td><td>no live worker serves it</td><td>1</td> <td>30 min</td>" in stalled
    breakers = health_section(page, "breakers")
    reopen = scalar(
        conn, "select to_char(reopen_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') from ops_kind_breakers"
    )
    assert '<span class="badge failed">open</span>' in breakers
    assert f"<td>1</td><td>upstream 500</td> <td>{reopen}</td>" in breakers
    assert "Re-enable" in breakers
    dead = health_section(page, "dead-letters")
    assert "<td>slack-ops</td><td><code>mission:failed</code></td> <td>8</td><td>HTTP 404 from the sink</td>" in dead

    response = browser.post("/console/kinds/crawl/enable", data={"csrf": token(browser, "/console/health")})
    assert response.status_code == 303
    assert conn.execute("select state, consecutive_failures from ops_kind_breakers").fetchone() == ("closed", 0)
    assert 'id="breakers"' not in browser.get("/console/health").text


def test_health_shows_the_kind_limits_and_today_s_spend_against_the_budgets(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    signed_in(browser)
    quiet = browser.get("/console/health").text
    assert "None: no kind has a fleet-wide limit" in quiet
    assert "budgets: none (policy <code>budgets</code> is not set)" in quiet
    assert "Nothing spent yet today: no step has reported usage." in quiet

    budgets = {"daily_usd": 10, "agent_daily_usd": 0.5, "per_agent": {"growth": {"daily_tokens": 1000}}}
    ops.set_policy("budgets", budgets, "test")
    policy = ops.get_policy("worker_policy").value
    kinds = {"crawl": {"max_running": 1, "per_minute": 5}, "analyze": {"per_minute": 100}}
    ops.set_policy("worker_policy", {**policy, "kinds": kinds}, "test")
    ops.propose("brain", "crawl", [step("crawl")])
    ops.propose("growth", "analyze", [step("analyze")])
    for n in range(2):
        ops.propose("growth", f"crawl {n}", [step("crawl")])
    [crawl] = ops.claim("w", ["crawl"], max_steps=5)
    ops.complete(crawl.id, crawl.attempt, usage={"cost_usd": 0.75})
    [analyze] = ops.claim("w", ["analyze"])
    ops.complete(analyze.id, analyze.attempt, usage={"tokens_in": 100, "tokens_out": 20, "cost_usd": 0.0042})
    assert len(ops.claim("w", ["crawl"], max_steps=5)) == 1, "max_running 1"
    page = browser.get("/console/health").text

    limits = health_section(page, "kind-limits")
    assert "<td><code>analyze</code></td><td>0</td><td>-</td> <td>1</td><td>100</td> <td>0</td><td></td></tr>" in limits
    full = '<span class="badge queued">at limit</span>'
    assert f"<td><code>crawl</code></td><td>1</td><td>1</td> <td>2</td><td>5</td> <td>1</td><td>{full}</td>" in limits
    day = scalar(conn, "select (now() at time zone 'UTC')::date::text")
    hint = re.search(r'<p class="hint" id="budgets">(.*?)</p>', page, re.S)
    assert hint, "the budgets are shown above the table"
    assert hint.group(1).startswith(f"{day} UTC · budgets: <code>")
    assert json.loads(re.sub(r"<.*?>", "", hint.group(1)).split("budgets: ", 1)[1]) == budgets
    spend = health_section(page, "spend")
    assert re.findall(r"<tr>(.*?)</tr>", spend) == [
        "<th>Agent</th><th>Cost (USD)</th><th>Limit (USD)</th><th>Tokens</th><th>Limit (tokens)</th>"
        "<th>In · out</th><th>Steps</th><th>Budget</th>",
        "<td>all agents</td><td>0.7542</td><td>10</td> <td>120</td><td>-</td><td>100 · 20</td><td>2</td> "
        '<td><span class="badge succeeded">within</span></td>',
        "<td>brain</td><td>0.75</td><td>0.5</td> <td>0</td><td>-</td><td>0 · 0</td><td>1</td> "
        '<td><span class="badge failed">exhausted</span></td>',
        "<td>growth</td><td>0.0042</td><td>0.5</td> <td>120</td><td>1000</td><td>100 · 20</td><td>1</td> "
        '<td><span class="badge succeeded">within</span></td>',
    ]


def test_health_charts_are_svg_drawn_on_the_server_with_text_alternatives(
    browser: httpx.Client, ops: Ops, conn: psycopg.Connection
) -> None:
    for title in ("one", "two"):
        ops.propose("brain", title, [step("crawl")])
    [claimed] = ops.claim("w1", ["crawl"])
    ops.complete(claimed.id, claimed.attempt, {})
    ops.heartbeat()  # samples the queue into this minute
    conn.execute("select ops_internal.rollup_metrics_at(now() + interval '2 minutes')")  # closes this minute
    signed_in(browser)
    response = browser.get("/console/health")
    page = response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    charts = re.findall(r'<svg viewBox="0 0 720 200" role="img" aria-labelledby="(chart-\w+)-title \1-desc"', page)
    assert charts == ["chart-queue", "chart-steps", "chart-heartbeat"]
    descriptions = dict(re.findall(r'<desc id="(chart-\w+)-desc">([^<]*)</desc>', page))
    assert "crawl: peak 1 at " in descriptions["chart-queue"]
    assert "succeeded: busiest minute 1 at " in descriptions["chart-steps"]
    assert "failed: busiest minute 0 at " in descriptions["chart-steps"]
    assert "heartbeat: peak " in descriptions["chart-heartbeat"]
    assert len(re.findall(r'<path class="line (s0|ok|bad|warn)" d="M[\d. LMh-]+"', page)) == 5
    assert page.count("<details>") == 3, "each chart's data, hour by hour, as a table"
    assert " style=" not in page, "no inline style: the CSP forbids it"
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/console/static/console.js" defer>']


# --- the key for the local demo ----------------------------------------------------------------------------------


def test_the_local_demo_key_is_made_once_private_and_a_configured_key_wins(tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "console-key"
    first = ConsoleAccess.local(Settings(), key_file)
    assert first.key is not None
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = ConsoleAccess.local(Settings(), key_file)
    assert again.key == first.key, "the same key across runs"
    assert len(first.key.reveal()) >= 24
    configured = ConsoleAccess.local(Settings(ops_key=Secret("the-ops-key")), tmp_path / "unused")
    assert configured.key == Secret("the-ops-key")
    assert not (tmp_path / "unused").exists()
    console_key = ConsoleAccess.from_settings(Settings(ops_key=Secret("ops"), environ={"CONSOLE_KEY": "console"}))
    assert console_key.key == Secret("console"), "CONSOLE_KEY is preferred to OPS_KEY"


def test_a_database_outage_is_a_503_page_without_secrets() -> None:
    unreachable = direct_settings("postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere", retries=0, timeout=2)
    with Ops(unreachable) as down, console(down) as client:
        signed_in(client)
        for page in ("/console/proposals", "/console/health"):
            response = client.get(page)
            assert response.status_code == 503, page
            assert "The database cannot be reached right now" in response.text
            assert "hunter2-secret" not in response.text
