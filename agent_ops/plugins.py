"""Loading plug-ins: named modules are imported (their decorators register), then an entry point group.

Shared by trigger plug-ins (agent_ops.triggers) and executors (vps_worker.executors).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("agent_ops.plugins")


def load(modules: Iterable[str], group: str, what: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Import `modules`, then yield `(name, callable)` for each entry point of `group` that names a callable.

    An entry point naming a module registers through its decorators on import and yields nothing. One that
    fails to load is logged (as a `what` plug-in) and skipped; a module given by name that fails to import
    raises, since the caller asked for it explicitly.
    """
    for module in modules:
        importlib.import_module(module)
    for point in entry_points(group=group):
        try:
            loaded = point.load()
        except Exception:
            log.exception("%s plug-in %s failed to load", what, point.name)
            continue
        if callable(loaded):
            yield point.name, loaded
