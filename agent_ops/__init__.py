"""agent-ops: a Supabase-native closed loop for AI agent operations.

`Ops` is the API: every method calls one ops_* SQL function over PostgREST or a direct Postgres connection.
"""

from agent_ops.client import Ops, step
from agent_ops.config import ConfigError, Secret, Settings
from agent_ops.errors import Conflict, InvalidInput, NotFound, OpsError, PermissionDenied, TransportError

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "Ops",
    "OpsError",
    "PermissionDenied",
    "Secret",
    "Settings",
    "TransportError",
    "__version__",
    "step",
]
