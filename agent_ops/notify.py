"""Delivering notifications: claim from the outbox, POST each to its sink, report every attempt.

The database decides everything else (supabase/migrations/20261203002300_ops_notifications_delivery.sql):
what is due, leases, rate limits, retries with backoff, the 429 pause and dead letters. This module only
turns a claimed row into an HTTP request and the response into a report.

- **Where the URL comes from.** A sink names an environment variable (`url_env`); its value is read here,
  from the settings' environment (.env under os.environ), and never printed, logged or reported: every error
  text is redacted of the URL and its parts before it leaves this module.
- **Formats.** Slack incoming webhooks get `{"text": ...}`, Discord webhooks `{"content": ..., "allowed_mentions":
  {"parse": []}}` (an event title cannot ping @everyone), `json` the event itself with the idempotency key.
- **At-least-once, with an idempotency key.** Every request carries `Idempotency-Key: agent-ops-<outbox id>`
  and the same key in its body (the `idempotency_key` field, or the last line of a chat message). A
  deliverer that stops between the request and its report leaves the row leased; once the lease expires the
  next claim sends it again under the same key. Nothing else sends a message twice.
- **Drivers.** `agent-ops notify` (once, for cron), `agent-ops heartbeat --every N` (after each beat) and
  `agent-ops serve` (a `DeliveryLoop` thread every few seconds). They may run together: claims skip what
  another deliverer holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_ops import __version__
from agent_ops.client import Ops
from agent_ops.errors import OpsError
from agent_ops.models import ClaimedNotification, NotificationReport

log = logging.getLogger("agent_ops.notify")

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# A send starts only with this much of its lease left, so that it ends (every timeout included) under the lease.
SEND_MARGIN_SECONDS = 30.0
MAX_ERROR_CHARS = 500
MAX_RETRY_AFTER = 86400
DISCORD_LIMIT = 2000
SLACK_LIMIT = 3500
REDACTED = "<sink URL>"


def default_deliverer_name() -> str:
    return f"notify@{socket.gethostname()}:{os.getpid()}"[:200]


# -- message bodies -------------------------------------------------------------------------------------------


def _headline(item: ClaimedNotification) -> str:
    event = item.event
    title = str(event.get("title") or event.get("type") or "event")
    if item.matched == "proposal:pending":
        return f"Waiting for a person: {title}"
    return title


def message_lines(item: ClaimedNotification) -> list[str]:
    """The message people read, one fact a line; the last line names the idempotency key."""
    event = item.event
    lines = [f"[{event.get('type')}] {_headline(item)}"]
    if event.get("summary"):
        lines.append(str(event["summary"]))
    facts = [f"agent {event.get('agent_id')}", f"event #{event.get('id')}"]
    for name in ("proposal_id", "mission_id", "step_id"):
        if event.get(name) is not None:
            facts.append(f"{name.removesuffix('_id')} #{event[name]}")
    lines.append(" · ".join(facts))
    if item.matched == "proposal:pending" and event.get("proposal_id") is not None:
        lines.append(f"decide: agent-ops approve {event['proposal_id']} (or reject), or in the console")
    lines.append(item.idempotency_key)
    return lines


def _slack_escape(text: str) -> str:
    # Slack's control characters: without this an event title could write <!channel> or a fake link.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(item: ClaimedNotification) -> dict[str, Any]:
    """The JSON body for the sink's format."""
    lines = message_lines(item)
    if item.format == "slack":
        head, *rest = (_slack_escape(line) for line in lines)
        return {"text": _clip("\n".join([f"*{head}*", *rest]), SLACK_LIMIT)}
    if item.format == "discord":
        # The key line stays whole at the end however long the rest is.
        body = _clip("\n".join(lines[:-1]), DISCORD_LIMIT - len(lines[-1]) - 1)
        return {"content": f"{body}\n{lines[-1]}", "allowed_mentions": {"parse": []}}
    return {
        "idempotency_key": item.idempotency_key,
        "sink": item.sink,
        "attempt": item.attempt,
        "matched": item.matched,
        "text": "\n".join(lines[:-1]),
        "event": item.event,
    }


# -- HTTP ---------------------------------------------------------------------------------------------------


def redact(text: str, url: str | None) -> str:
    """`text` without the URL or any part of it that could be the secret (the path of a webhook is)."""
    if not url:
        return text
    parts = urlsplit(url)
    pieces = {url, url.rstrip("/"), parts.netloc + parts.path, parts.path, parts.query, parts.netloc}
    for piece in sorted((p for p in pieces if len(p) >= 8 or p == url), key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text


def parse_retry_after(value: str | None, now: datetime | None = None) -> int | None:
    """Retry-After as whole seconds (delta-seconds or an HTTP date), within 0..86400; None when absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    seconds: float
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return int(min(max(seconds, 0.0), MAX_RETRY_AFTER) + 0.999)


@dataclass(frozen=True)
class Attempt:
    """What one send came to, before it is reported."""

    delivered: bool
    http_status: int | None = None
    error: str | None = None
    retry_after: int | None = None


def send(client: httpx.Client, item: ClaimedNotification, url: str) -> Attempt:
    """POST the rendered message; never raises for HTTP or network trouble, never lets the URL out."""
    headers = {
        "Idempotency-Key": item.idempotency_key,
        "User-Agent": f"agent-ops/{__version__}",
    }
    try:
        response = client.post(url, json=render(item), headers=headers)
    except httpx.HTTPError as error:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return Attempt(False, error=_clip(redact(text, url), MAX_ERROR_CHARS))
    if 200 <= response.status_code < 300:
        return Attempt(True, http_status=response.status_code)
    reason = response.reason_phrase or ""
    detail = response.text.strip().replace("\n", " ")[:200]
    text = f"HTTP {response.status_code} {reason}".strip() + (f": {detail}" if detail else "")
    return Attempt(
        False,
        http_status=response.status_code,
        error=_clip(redact(text, url), MAX_ERROR_CHARS),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


# -- the deliverer ------------------------------------------------------------------------------------------


@dataclass
class DeliveryRun:
    """One pass: what was claimed and what became of each (no URL anywhere in it)."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    skipped: int = 0
    error: str | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "claimed": self.claimed,
            "sent": self.sent,
            "retrying": self.retrying,
            "dead": self.dead,
            "skipped": self.skipped,
            "deliveries": self.deliveries,
        }

    def summary(self) -> str:
        if self.error:
            return f"notifications failed: {self.error}"
        if not self.claimed:
            return "notifications: nothing due"
        parts = [f"{self.sent} sent", f"{self.retrying} to retry", f"{self.dead} dead"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (lease too short)")
        return f"notifications: {self.claimed} claimed, " + ", ".join(parts)


class Deliverer:
    """Claims and delivers notifications for one process. Thread-safe enough for one caller at a time."""

    def __init__(
        self,
        ops: Ops,
        *,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        max_items: int = 10,
        max_rounds: int = 5,
    ) -> None:
        self.ops = ops
        self.name = name or default_deliverer_name()
        self._environ = environ
        self._client = client or httpx.Client(timeout=TIMEOUT, follow_redirects=False)
        self._owns_client = client is None
        self.max_items = max_items
        self.max_rounds = max_rounds

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _url(self, item: ClaimedNotification) -> tuple[str | None, str | None]:
        """(url, None) or (None, why not): the variable named by the sink, checked, never shown."""
        environ = self._environ if self._environ is not None else self.ops.settings.environ or os.environ
        value = (environ.get(item.url_env) or "").strip()
        if not value:
            return None, f"environment variable {item.url_env} is not set where the deliverer {self.name} runs"
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None, f"environment variable {item.url_env} does not hold an http(s) URL"
        return value, None

    def deliver_once(self) -> DeliveryRun:
        """Claim and deliver until nothing more is due (at most `max_rounds` claims of `max_items`)."""
        run = DeliveryRun()
        for _ in range(self.max_rounds):
            try:
                claimed_at = time.monotonic()
                items = self.ops.claim_notifications(self.name, self.max_items)
            except OpsError as error:
                run.error = f"{type(error).__name__}: {error}"
                log.warning("claiming notifications failed: %s", run.error)
                return run
            run.claimed += len(items)
            for item in items:
                self._deliver(item, claimed_at, run)
            if len(items) < self.max_items:
                break
        return run

    def _deliver(self, item: ClaimedNotification, claimed_at: float, run: DeliveryRun) -> None:
        record: dict[str, Any] = {"id": item.id, "sink": item.sink, "attempt": item.attempt}
        run.deliveries.append(record)
        lease = item.lease_seconds or 0.0
        if time.monotonic() - claimed_at > lease - SEND_MARGIN_SECONDS:
            # Too little lease left to finish: sending now could race the claim that takes it back.
            record["outcome"] = "skipped"
            run.skipped += 1
            return
        url, problem = self._url(item)
        attempt = Attempt(False, error=problem) if url is None else send(self._client, item, url)
        record.update(http_status=attempt.http_status, error=attempt.error)
        try:
            report = self.ops.report_notification(
                item.id,
                item.attempt,
                attempt.delivered,
                http_status=attempt.http_status,
                error=attempt.error,
                retry_after_seconds=attempt.retry_after,
            )
        except OpsError as error:
            # The lease was lost (PT409) or the database is away: the row comes back when its lease expires.
            record["outcome"] = "unreported"
            record["report_error"] = f"{type(error).__name__}: {error}"
            log.warning("notification %s attempt %s: report failed: %s", item.id, item.attempt, error)
            return
        self._count(report, record, run)
        if not attempt.delivered:
            log.warning(
                "notification %s to %s attempt %s not delivered (%s): %s",
                item.id,
                item.sink,
                item.attempt,
                report.status,
                attempt.error,
            )

    @staticmethod
    def _count(report: NotificationReport, record: dict[str, Any], run: DeliveryRun) -> None:
        record["outcome"] = report.status
        if report.status == "sent":
            run.sent += 1
        elif report.status == "dead":
            run.dead += 1
        else:
            run.retrying += 1
            if report.next_attempt_at is not None:
                record["next_attempt_at"] = report.next_attempt_at.isoformat()


class DeliveryLoop:
    """`agent-ops serve`'s background deliverer: a daemon thread delivering every `every` seconds."""

    def __init__(self, deliverer: Deliverer, every: float = 5.0) -> None:
        self.deliverer = deliverer
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self.last: DeliveryRun | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.deliverer.deliver_once()
            except Exception:  # a bug here must not end deliveries for the life of the server
                log.exception("notification delivery failed")
            self._stop.wait(self.every)

    def start(self) -> DeliveryLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> DeliveryLoop:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
