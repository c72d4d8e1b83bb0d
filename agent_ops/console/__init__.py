"""The ops console: the control-plane web pages for people who run the loop (`agent-ops serve`, /console/)."""

from agent_ops.console.app import create_console
from agent_ops.console.auth import ConsoleAccess

__all__ = ["ConsoleAccess", "create_console"]
