"""Ray connection, settings, the CLI, metrics and reports: the room that talks to the user."""

from cluster.runtime import Runtime, current, init, shutdown
from cluster.settings import Settings

__all__ = ["Runtime", "Settings", "current", "init", "shutdown"]
