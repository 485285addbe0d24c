"""Ray connection, settings, the CLI, metrics and reports: the room that talks to the user.

``cluster.init`` and friends are loaded on first use: importing ``cluster`` (as the CLI does,
for ``cluster.cli``) must not pay for Ray and the anthropic SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Runtime", "Settings", "current", "init", "shutdown"]

_HOMES = {"Runtime": "cluster.runtime", "current": "cluster.runtime", "init": "cluster.runtime",
          "shutdown": "cluster.runtime", "Settings": "cluster.settings"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
