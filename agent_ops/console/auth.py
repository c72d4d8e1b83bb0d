"""Who may use the console: one shared key, a signed session cookie, and a CSRF token per session.

The key is CONSOLE_KEY when set, else OPS_KEY; with neither the console stays closed (503), never open. A
correct key starts a session in an HttpOnly, SameSite=Strict cookie. The cookie is signed with a random
secret per process (or CONSOLE_SESSION_SECRET, to share sessions between processes and restarts), never
with something derived from the key: a cookie handed to an anonymous visitor must not let anyone test key
guesses offline. A session records a fingerprint of the key it was opened with (a new key ends it), when it
was opened (it ends after SESSION_SECONDS however busy it is), and an id that signing out revokes. Every
form carries the session's CSRF token, compared in constant time. Wrong keys are throttled per client by the
throttle the heartbeat endpoint shares (agent_ops/throttle.py), checked before the sign-in form is read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_ops.config import Secret, Settings

SESSION_COOKIE = "agent_ops_console"
SESSION_SECONDS = 12 * 3600
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.@-]{0,59}$")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ConsoleAccess:
    key: Secret | None
    secure_cookie: bool = False
    session_secret: Secret | None = None
    session_seconds: float = SESSION_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleAccess:
        console_key = (settings.environ.get("CONSOLE_KEY") or "").strip()
        session_secret = (settings.environ.get("CONSOLE_SESSION_SECRET") or "").strip()
        return cls(
            Secret(console_key) if console_key else settings.ops_key,
            _flag(settings.environ.get("CONSOLE_SECURE_COOKIE")),
            Secret(session_secret) if session_secret else None,
        )

    @classmethod
    def local(cls, settings: Settings, key_file: Path) -> ConsoleAccess:
        """The configured key, else a key kept in `key_file` (created once, mode 600): for the local demo."""
        configured = cls.from_settings(settings)
        if configured.open:
            return configured
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
        return cls(Secret(key_file.read_text().strip()), configured.secure_cookie, configured.session_secret)

    @property
    def open(self) -> bool:
        return self.key is not None and bool(self.key.reveal())

    def key_matches(self, given: str | None) -> bool:
        if self.key is None or not self.open or not given:
            return False
        return hmac.compare_digest(given.encode(), self.key.reveal().encode())


class Sessions:
    """The console's sessions: signing secret, sign in and out, revocation."""

    def __init__(self, access: ConsoleAccess) -> None:
        self.access = access
        self.secret = access.session_secret.reveal() if access.session_secret else secrets.token_hex(32)
        key = access.key.reveal().encode() if access.key else b""
        self._key_id = hmac.new(self.secret.encode(), b"console key:" + key, hashlib.sha256).hexdigest()[:32]
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def sign_in(self, session: dict[str, Any], name: str) -> None:
        session.clear()  # nothing from before the login carries over (no session fixation)
        session.update(
            signed_in=True,
            name=name,
            sid=secrets.token_urlsafe(16),
            issued=time.time(),
            key=self._key_id,
            csrf=secrets.token_urlsafe(32),
        )

    def signed_in(self, session: dict[str, Any]) -> bool:
        if session.get("signed_in") is not True or session.get("key") != self._key_id:
            return False
        issued = session.get("issued")
        if not isinstance(issued, int | float) or time.time() - issued > self.access.session_seconds:
            return False
        with self._lock:
            return session.get("sid") not in self._revoked

    def sign_out(self, session: dict[str, Any]) -> None:
        """Ends the session for good: its cookie, replayed, is refused until it would have expired anyway."""
        sid, issued = session.get("sid"), session.get("issued")
        if isinstance(sid, str) and isinstance(issued, int | float):
            now = time.time()
            with self._lock:
                self._revoked = {s: until for s, until in self._revoked.items() if until > now}
                self._revoked[sid] = issued + self.access.session_seconds
        session.clear()


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid(session: dict[str, Any], given: object) -> bool:
    expected = session.get("csrf")
    if not isinstance(expected, str) or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def operator(session: dict[str, Any]) -> str:
    """`decided_by` / `updated_by` for what this session does: console, or console:<name given at login>."""
    name = session.get("name")
    return f"console:{name}" if isinstance(name, str) and name else "console"
