"""The ``raytroupe`` app as the console script builds it: one place for the CLI tests to get it.

(With an explicit command table, ``app = build_app()`` here is the only line that changes.)
"""

from __future__ import annotations

from cluster.cli import _register_commands, app

_register_commands()

__all__ = ["app"]
