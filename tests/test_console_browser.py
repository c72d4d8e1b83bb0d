"""The ops console in headless Chromium (Playwright driving Debian's chromium) with real processes:
`agent-ops serve` and a `vps-worker` against this test's database.

Screenshots of every page go to artifacts/console/ (git-ignored) as test artefacts.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from agent_ops import Ops, step
from tests.kit.children import CheckoutProcesses
from tests.kit.database import ROOT
from tests.kit.settings import direct_settings

KEY = "browser-test-console-key"
SHOTS = ROOT / "artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[str]:
    """`agent-ops serve` with a console key, and one worker running supabase/seed.sql's tweet kinds with built-ins."""
    port = free_port()
    # Explicit values win over a developer's .env (plain HTTP here: no Secure cookie).
    with CheckoutProcesses(tmp_path, DATABASE_URL=db_url, CONSOLE_SECURE_COOKIE="0") as children:
        serve = children.start(
            "serve",
            [sys.executable, "-m", "agent_ops", "serve", "--port", str(port), "--log-level", "warning"],
            env={"CONSOLE_KEY": KEY},
        )
        children.start_worker(
            "worker",
            "--worker-id",
            "browser-worker",
            "--kinds",
            "draft_tweet,post_tweet",
            "--alias",
            "draft_tweet=echo",
            "--alias",
            "post_tweet=sleep",
            "--poll-min",
            "0.2",
            "--poll-max",
            "0.5",
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise AssertionError("agent-ops serve did not start: " + children.log("serve"))
            time.sleep(0.1)
        yield base
        children.stop(timeout=15)


@pytest.fixture
def chromium() -> Iterator[Browser]:
    assert CHROMIUM is not None, "chromium is required: scripts/system-deps installs it"
    with sync_playwright() as playwright:
        # --no-sandbox: the test set-up runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_operator_runs_the_loop_from_the_browser(
    served: str, chromium: Browser, db_url: str, conn: psycopg.Connection
) -> None:
    with Ops(direct_settings(db_url)) as ops:
        # Seed policy: draft_tweet is auto-approved, post_tweet is not, so both proposals wait for a human.
        launch = ops.propose(
            "twitter-alt",
            "Post the launch tweet",
            [step("draft_tweet", {"text": "We are live"}), step("post_tweet", {"seconds": 1.5}, depends_on=[0])],
            description="Announce the release",
        )
        offbrand = ops.propose("twitter-alt", "Post a meme", [step("post_tweet", {"seconds": 0})])
        assert (launch.status, offbrand.status) == ("pending", "pending")

        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{served}/console/")
        expect(page).to_have_url(re.compile(r"/console/login\?next="))
        shot(page, "01-login")

        # A wrong key shows no data.
        page.fill("input[name=key]", "not-the-key")
        page.click("button:has-text('Sign in')")
        expect(page.locator(".flash.error")).to_have_text("Wrong key.")
        assert "Post the launch tweet" not in page.content()

        page.fill("input[name=key]", KEY)
        page.fill("input[name=name]", "ada")
        page.click("button:has-text('Sign in')")
        expect(page).to_have_url(f"{served}/console/proposals")
        launch_card = page.locator(f"#proposal-{launch.proposal_id}")
        expect(launch_card).to_contain_text("Post the launch tweet")
        expect(launch_card).to_contain_text("Gates now: pass")
        expect(launch_card.locator("code", has_text="post_tweet")).to_be_visible()
        expect(page.locator("#kill-switch")).to_contain_text("System running")
        shot(page, "02-proposals")

        # Approve: the card turns into the result in place, with a link to the new mission.
        launch_card.locator("button:has-text('Approve')").click()
        decided = page.locator(f"#proposal-{launch.proposal_id}.decided")
        expect(decided).to_contain_text("approved: mission #")
        mission_id = conn.execute(
            "select id from ops_missions where proposal_id = %s", (launch.proposal_id,)
        ).fetchone()
        assert mission_id is not None
        expect(decided).to_contain_text(f"mission #{mission_id[0]} created")

        # Reject the other one with a reason, in place too.
        offbrand_card = page.locator(f"#proposal-{offbrand.proposal_id}")
        offbrand_card.locator("input[name=reason]").fill("not on brand")
        offbrand_card.locator("button:has-text('Reject')").click()
        expect(page.locator(f"#proposal-{offbrand.proposal_id}.decided")).to_contain_text("rejected: not on brand")
        row = conn.execute(
            "select status, rejection_reason, decided_by from ops_mission_proposals where id = %s",
            (offbrand.proposal_id,),
        ).fetchone()
        assert row == ("rejected", "not on brand", "console:ada")
        shot(page, "03-decided")

        # The mission page follows the worker until every step is done.
        page.click(f"a:has-text('Open mission #{mission_id[0]}')")
        expect(page.locator("h1")).to_contain_text("Post the launch tweet")
        expect(page.locator("#mission-status")).to_have_text("succeeded", timeout=45_000)
        expect(page.locator(".step.succeeded")).to_have_count(2)
        expect(page.locator(".timeline")).to_contain_text("worker browser-worker")
        expect(page.locator(".timeline")).to_contain_text("We are live")
        shot(page, "04-mission")

        page.click("nav a:has-text('Missions')")
        page.select_option("select[name=status]", "succeeded")
        page.click("button:has-text('Filter')")
        expect(page.locator("table")).to_contain_text("Post the launch tweet")
        shot(page, "05-missions")

        # The events feed is live: an event emitted now appears without a reload.
        page.click("nav a:has-text('Events')")
        expect(page.locator("#event-rows")).to_contain_text("mission:succeeded")
        ops.emit_event("tweet:posted", "twitter-alt", title="Launch tweet is out", tags=["tweet", "posted"])
        expect(page.locator("#event-rows tr").first).to_contain_text("Launch tweet is out", timeout=10_000)
        shot(page, "06-events")

        # Policy: a good value is saved, a bad one refused with the SQL's reason, and nothing changes.
        page.click("nav a:has-text('Policy')")
        editor = page.locator("#policy-max_active_missions")
        editor.locator("textarea").fill('{"limit": 5}')
        editor.locator("button").click()
        expect(page.locator(".flash.ok")).to_have_text("Saved max_active_missions.")
        assert ops.get_policy("max_active_missions").value == {"limit": 5}
        editor = page.locator("#policy-max_active_missions")
        editor.locator("textarea").fill('{"limit": -3}')
        editor.locator("button").click()
        refusal = page.locator("#policy-max_active_missions .flash.error")
        expect(refusal).to_contain_text("Refused: ")
        expect(refusal).to_contain_text("limit")
        expect(page.locator("#policy-max_active_missions textarea")).to_have_value('{"limit": -3}')
        assert ops.get_policy("max_active_missions").value == {"limit": 5}
        shot(page, "07-policy-refused")

        ops.heartbeat()
        page.click("nav a:has-text('Health')")
        expect(page.locator("h2", has_text="Heartbeat runs")).to_be_visible()
        expect(page.locator("table").last).to_contain_text("succeeded")
        shot(page, "08-health")

        # The same console on a phone.
        phone = chromium.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, storage_state=context.storage_state()
        )
        small = phone.new_page()
        small.goto(f"{served}/console/missions/{mission_id[0]}")
        expect(small.locator("#mission-status")).to_have_text("succeeded")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"no sideways scrolling on a phone (page is {width}px wide)"
        shot(small, "09-mission-phone")
        phone.close()
        context.close()
