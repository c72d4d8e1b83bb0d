"""Worker settings: flags, then environment, then `.env` (the same precedence as agent_ops)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

from agent_ops.config import ConfigError, Secret


def _list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _number(name: str, value: str | None, default: float, minimum: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}")
    return number


def _flag(name: str, value: str | None, *, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def default_worker_id() -> str:
    """host-pid, made safe for the database (lower-case, no spaces)."""
    host = re.sub(r"[^a-z0-9_.-]+", "-", socket.gethostname().lower()).strip("-") or "worker"
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str = field(default_factory=default_worker_id)
    kinds: list[str] = field(default_factory=list)  # empty: every registered executor
    concurrency: int = 4
    poll_min: float = 5.0
    poll_max: float = 15.0
    lease_seconds: int | None = None  # None: worker_policy (per kind)
    grace_seconds: float = 30.0
    # Abandoned runs still running (hung executors) the worker tolerates before it exits 75 for a restart;
    # None: the concurrency.
    max_abandoned: int | None = None
    listen: bool = True
    # Send finished steps' reports with the next claim (one round trip per step); off: one call per report.
    batch_reports: bool = True
    log_json: bool = False
    log_payloads: bool = False
    executor_modules: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    alive_file: str | None = None
    http_allowed_hosts: list[str] = field(default_factory=list)
    http_timeout: float = 30.0
    http_max_response_bytes: int = 1024 * 1024  # larger bodies fail the http step for good
    llm_base_url: str | None = None
    llm_api_key: Secret | None = None
    llm_model: str = "gpt-4o-mini"

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> WorkerSettings:
        def get(name: str) -> str | None:
            value = environ.get(name)
            return value.strip() if value and value.strip() else None

        poll_min = _number("WORKER_POLL_MIN", get("WORKER_POLL_MIN"), 5.0, 0.01)
        poll_max = _number("WORKER_POLL_MAX", get("WORKER_POLL_MAX"), max(15.0, poll_min), 0.01)
        if poll_max < poll_min:
            raise ConfigError("WORKER_POLL_MAX must be at least WORKER_POLL_MIN")
        lease = get("WORKER_LEASE_SECONDS")
        max_abandoned = get("WORKER_MAX_ABANDONED")
        aliases: dict[str, str] = {}
        for pair in _list(get("WORKER_ALIASES")):
            kind, sep, target = pair.partition("=")
            if not sep or not kind.strip() or not target.strip():
                raise ConfigError("WORKER_ALIASES must be KIND=EXECUTOR pairs separated by commas")
            aliases[kind.strip()] = target.strip()
        key = get("LLM_API_KEY") or get("OPENAI_API_KEY")
        return cls(
            worker_id=get("WORKER_ID") or default_worker_id(),
            kinds=_list(get("WORKER_KINDS")),
            concurrency=int(_number("WORKER_CONCURRENCY", get("WORKER_CONCURRENCY"), 4, 1)),
            poll_min=poll_min,
            poll_max=poll_max,
            lease_seconds=int(_number("WORKER_LEASE_SECONDS", lease, 0, 1)) if lease else None,
            grace_seconds=_number("WORKER_GRACE_SECONDS", get("WORKER_GRACE_SECONDS"), 30.0, 0),
            max_abandoned=int(_number("WORKER_MAX_ABANDONED", max_abandoned, 0, 0)) if max_abandoned else None,
            listen=_flag("WORKER_LISTEN", get("WORKER_LISTEN"), default=True),
            batch_reports=_flag("WORKER_BATCH_REPORTS", get("WORKER_BATCH_REPORTS"), default=True),
            log_json=_flag("WORKER_LOG_JSON", get("WORKER_LOG_JSON"), default=False),
            log_payloads=_flag("WORKER_LOG_PAYLOADS", get("WORKER_LOG_PAYLOADS"), default=False),
            executor_modules=_list(get("WORKER_EXECUTORS")),
            aliases=aliases,
            alive_file=get("WORKER_ALIVE_FILE"),
            http_allowed_hosts=[h.lower() for h in _list(get("WORKER_HTTP_ALLOWED_HOSTS"))],
            http_timeout=_number("WORKER_HTTP_TIMEOUT", get("WORKER_HTTP_TIMEOUT"), 30.0, 0.1),
            http_max_response_bytes=int(
                _number("WORKER_HTTP_MAX_RESPONSE_BYTES", get("WORKER_HTTP_MAX_RESPONSE_BYTES"), 1024 * 1024, 1)
            ),
            llm_base_url=get("LLM_BASE_URL") or get("OPENAI_BASE_URL"),
            llm_api_key=Secret(key) if key else None,
            llm_model=get("LLM_MODEL") or "gpt-4o-mini",
        )
