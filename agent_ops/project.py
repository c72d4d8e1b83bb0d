"""Where the project lives on disk: its root, its Supabase folder, and its local state folder."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

STATE_DIR_NAME = ".agent-ops"


def project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` that holds `supabase/migrations`, else `start` itself.

    Commands run from any sub-folder of a checkout then share one embedded server and one set of migrations.
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "supabase" / "migrations").is_dir():
            return candidate
    return here


def state_dir(root: Path | None = None) -> Path:
    """Local, git-ignored state: embedded Postgres data, sockets, logs. `AGENT_OPS_HOME` overrides it."""
    override = os.environ.get("AGENT_OPS_HOME")
    if override:
        return Path(override).resolve()
    return (root or project_root()) / STATE_DIR_NAME


def supabase_dir(root: Path | None = None) -> Path:
    """The checkout's `supabase/` folder, or the copy packaged into the wheel when there is no checkout."""
    checkout = (root or project_root()) / "supabase"
    if (checkout / "migrations").is_dir():
        return checkout
    packaged = Path(str(resources.files("agent_ops") / "_supabase"))
    if (packaged / "migrations").is_dir():
        return packaged
    return checkout
