"""Settings for agent_ops: arguments, then the environment, then a `.env` file.

Secrets (database URL passwords, API keys, OPS_KEY) are wrapped in `Secret`, whose repr and str never show
the value, so they cannot leak through logs, errors or tracebacks by accident. A `.env` that other users can
read is still loaded, with a warning on stderr once per file, as ssh warns about a private key.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from agent_ops.project import project_root

Transport = Literal["direct", "postgrest"]
TRANSPORTS: tuple[Transport, ...] = ("direct", "postgrest")


class ConfigError(ValueError):
    """A missing or malformed setting; the message names the variable and never shows its value."""


class Secret:
    """A value that must not be printed. `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:********@{netloc[1]}"))


@dataclass(frozen=True)
class Settings:
    """Everything agent_ops needs to reach the database. Build it with `Settings.load()`."""

    database_url: Secret | None = None
    supabase_url: str | None = None
    supabase_key: Secret | None = None
    ops_key: Secret | None = None
    transport: Transport | None = None
    timeout: float = 10.0
    connect_timeout: float = 5.0
    retries: int = 3
    pool_size: int = 4
    # The merged environment (.env under os.environ), for components with settings of their own (the worker).
    environ: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def chosen_transport(self) -> Transport:
        """DATABASE_URL → direct, SUPABASE_URL → PostgREST; AGENT_OPS_TRANSPORT decides when both are set."""
        if self.transport is not None:
            return self.transport
        if self.database_url is not None:
            return "direct"
        if self.supabase_url is not None:
            return "postgrest"
        raise ConfigError(
            "no database configured: set DATABASE_URL (direct Postgres) or SUPABASE_URL with "
            "SUPABASE_SERVICE_ROLE_KEY (PostgREST), or start the local server with `agent-ops db start`"
        )

    def validated(self) -> Settings:
        """Checks what the chosen transport needs; raises ConfigError naming the variable."""
        transport = self.chosen_transport
        if transport == "direct" and self.database_url is None:
            raise ConfigError("DATABASE_URL is required for the direct transport")
        if transport == "postgrest":
            if self.supabase_url is None:
                raise ConfigError("SUPABASE_URL is required for the PostgREST transport")
            if self.supabase_key is None:
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) is required with SUPABASE_URL")
        return self

    @classmethod
    def load(
        cls,
        *,
        env_file: Path | None = None,
        environ: dict[str, str] | None = None,
        **overrides: object,
    ) -> Settings:
        """Arguments win over the environment, which wins over `.env` (the project's, or `env_file`)."""
        source: dict[str, str] = {}
        dotenv_path = env_file or project_root() / ".env"
        if dotenv_path.exists():
            warn_if_readable_by_others(dotenv_path)
            source.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        source.update(os.environ if environ is None else environ)

        def text(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        values: dict[str, object] = {
            "database_url": _database_url(text("DATABASE_URL")),
            "supabase_url": _http_url("SUPABASE_URL", text("SUPABASE_URL")),
            "supabase_key": _secret(text("SUPABASE_SERVICE_ROLE_KEY") or text("SUPABASE_SECRET_KEY")),
            "ops_key": _secret(text("OPS_KEY")),
            "transport": _transport(text("AGENT_OPS_TRANSPORT")),
            "timeout": _number("AGENT_OPS_TIMEOUT", text("AGENT_OPS_TIMEOUT"), 10.0, minimum=0.1),
            "connect_timeout": _number(
                "AGENT_OPS_CONNECT_TIMEOUT", text("AGENT_OPS_CONNECT_TIMEOUT"), 5.0, minimum=0.1
            ),
            "retries": int(_number("AGENT_OPS_RETRIES", text("AGENT_OPS_RETRIES"), 3, integer=True, minimum=0)),
            "pool_size": int(_number("AGENT_OPS_POOL_SIZE", text("AGENT_OPS_POOL_SIZE"), 4, integer=True)),
            "environ": source,
        }
        known = {f.name for f in fields(cls)}
        for name, given in overrides.items():
            if name not in known:
                raise TypeError(f"unknown setting {name!r}")
            if given is not None:
                values[name] = _coerce(name, given)
        return cls(**values)  # type: ignore[arg-type]


_warned_about: set[Path] = set()


def warn_if_readable_by_others(path: Path) -> None:
    """One warning per file and process when anyone but its owner may read or write it (it holds secrets)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    resolved = path.resolve()
    if mode & 0o077 == 0 or resolved in _warned_about:
        return
    _warned_about.add(resolved)
    sys.stderr.write(
        f"warning: {path} is accessible by other users (mode {mode:04o}) and holds secrets; "
        f"run: chmod 600 {shlex.quote(str(path))}\n"
    )


def _coerce(name: str, value: object) -> object:
    """A setting given as an argument, checked like its environment variable."""
    if not isinstance(value, str):
        return value
    if name == "database_url":
        return _database_url(value)
    if name in ("supabase_key", "ops_key"):
        return Secret(value)
    if name == "supabase_url":
        return _http_url("SUPABASE_URL", value)
    if name == "transport":
        return _transport(value)
    return value


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


def _database_url(value: str | None) -> Secret | None:
    if value is None:
        return None
    scheme = urlsplit(value).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL")
    return Secret(value)


def _http_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL such as https://<project-ref>.supabase.co")
    return value.rstrip("/")


def _transport(value: str | None) -> Transport | None:
    if value is None:
        return None
    lowered = value.lower()
    for transport in TRANSPORTS:
        if lowered == transport:
            return transport
    raise ConfigError(f"AGENT_OPS_TRANSPORT must be one of: {', '.join(TRANSPORTS)}")


def _number(name: str, value: str | None, default: float, *, integer: bool = False, minimum: float = 1) -> float:
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise ConfigError(f"{name} must be {'a whole number' if integer else 'a number'}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return number
