"""Start a driver's private Ray without the head processes that no one uses in it.

``ray.init(address="local", include_dashboard=False)`` still starts two Python processes on the
head that a private, one-node Ray of one run never serves: the dashboard's API server (with the
dashboard off it loads only Ray's usage-stats module: no dashboard, no state or job API) and the
autoscaler's monitor (a private Ray never scales). Worse, ``ray.init`` waits for the API server
to come up before it even starts the raylet: on 2 cores that wait is ~1 s of a cold
``raytroupe run``'s start-up, and the two processes ~1.5 CPU-seconds taken from the ones that
matter (``docs/performance.md``, "Start-up"). Ray has no option to leave them out of
``ray.init`` (``RayParams.no_monitor`` exists, but ``ray.init`` does not pass it, and nothing
skips the API server), so :func:`start` skips the two ``Node`` methods that start them, for the
duration of its ``ray.init`` only. If a Ray release renames them, Ray starts as usual.

Only a Ray started with ``include_dashboard=False`` is started lean: with the dashboard asked
for (``raytroupe up``, the test suite), Ray starts as it always does.

Example:
    >>> start("raytroupe", include_dashboard=False)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

SKIPPED = ("start_api_server", "start_monitor")
"""The ``ray._private.node.Node`` methods a lean start skips."""


def start(namespace: str, **ray_init: Any) -> None:
    """``ray.init`` a fresh local Ray; lean (see the module) when the dashboard is off."""
    import ray

    lean = ray_init.get("include_dashboard") is False
    with _without_head_extras() if lean else contextlib.nullcontext():
        ray.init(address="local", namespace=namespace, **ray_init)


@contextlib.contextmanager
def _without_head_extras() -> Iterator[None]:
    """Make the head's API server and monitor no-ops for the block (this thread starts Ray)."""
    from ray._private.node import Node

    saved = {name: Node.__dict__[name] for name in SKIPPED if name in Node.__dict__}
    if len(saved) != len(SKIPPED):  # another Ray: start it the way it starts
        yield
        return
    for name in saved:
        setattr(Node, name, _skip)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def _skip(self: Any, *args: Any, **kwargs: Any) -> None:
    """Stands in for a skipped ``Node`` method: the process is not started."""
