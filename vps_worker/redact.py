"""Secrets out of what the worker reports: step errors and outputs end up in `last_error`, in step events and
on the console's mission page, and an executor's exception text can quote anything it had at hand.

Redacted: the values of the worker's configured secrets (database URL and its password, Supabase key,
OPS_KEY, LLM key), of environment variables whose names say they hold one (executors read their own
credentials from the environment), and any password in `scheme://user:password@host` or `password=...`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from agent_ops.config import Secret, Settings
from vps_worker.config import WorkerSettings

MASK = "********"  # what agent_ops.config.redact_url shows for a password

# Shorter values would mask ordinary words all over a message, and are no secret worth the name.
MIN_SECRET_LENGTH = 4
# Environment variables are matched by name only, so their values must look like credentials, not flags.
MIN_ENVIRONMENT_SECRET_LENGTH = 8
SECRET_NAME = re.compile(r"(^|_)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)

# scheme://user:password@host; the password may hold '@' (unencoded), so it runs to the last '@' before
# the path. Whitespace ends it: a message quoting a URL rarely puts a space inside one.
URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*:)[^\s/?#]+@")
# libpq keyword strings and query parameters: password=secret, password='se cret'
KEYWORD_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'&;,]+)")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        # Longest first, so a secret that contains another is masked whole.
        self._known = re.compile("|".join(re.escape(s) for s in known)) if known else None

    @classmethod
    def for_worker(cls, settings: Settings, worker: WorkerSettings) -> Redactor:
        secrets: list[str] = []
        for secret in (settings.database_url, settings.supabase_key, settings.ops_key, worker.llm_api_key):
            if isinstance(secret, Secret):
                secrets.extend(_forms(secret.reveal()))
        for name, value in settings.environ.items():
            if SECRET_NAME.search(name) and len(value) >= MIN_ENVIRONMENT_SECRET_LENGTH:
                secrets.extend(_forms(value))
        return cls(secrets)

    def text(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(MASK, text)
        text = URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
        return KEYWORD_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}", text)

    def json(self, value: Any) -> Any:
        """`value` (decoded JSON) with every string, keys included, redacted. Iterative: any depth."""
        root: list[Any] = [value]
        stack: list[tuple[Any, Any]] = [(root, 0)]  # (container, key or index) whose value to redact
        while stack:
            container, slot = stack.pop()
            node = container[slot]
            if isinstance(node, str):
                container[slot] = self.text(node)
            elif isinstance(node, list):
                items = list(node)
                container[slot] = items
                stack.extend((items, index) for index in range(len(items)))
            elif isinstance(node, dict):
                fields = {self.text(k) if isinstance(k, str) else k: v for k, v in node.items()}
                container[slot] = fields
                stack.extend((fields, key) for key in fields)
        return root[0]


def _forms(value: str) -> list[str]:
    """A secret as it may appear in a message: itself, and for a URL its password, encoded and decoded."""
    forms = [value]
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        forms.extend([password, unquote(password)])
    return forms
