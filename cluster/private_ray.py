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

It also lets the raylet's DashboardAgent pick a free port for its HTTP server. Ray's default is
the fixed port 52365: while any other Ray on the machine holds it, the agent retries for 3.4 s
before it gives up, and the raylet waits for the agent all that time (a lean ``ray.init``:
6.9-10.3 s instead of 1.9-2.0 s, measured with another Ray up). ``ray.init`` has no option for
that port either (``ray start --dashboard-agent-listen-port`` does); 0 makes the agent bind
any free one, as its other ports already do.

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
    """For the block (this thread starts Ray): the head's API server and monitor are no-ops,
    and the DashboardAgent's HTTP port is any free one."""
    from ray._private.node import Node

    names = (*SKIPPED, "__init__")
    saved = {name: Node.__dict__[name] for name in names if name in Node.__dict__}
    if len(saved) != len(names):  # another Ray: start it the way it starts
        yield
        return
    for name in SKIPPED:
        setattr(Node, name, _skip)
    Node.__init__ = _free_agent_port(saved["__init__"])
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def _skip(self: Any, *args: Any, **kwargs: Any) -> None:
    """Stands in for a skipped ``Node`` method: the process is not started."""


def _free_agent_port(init: Any) -> Any:
    """``Node.__init__`` with the DashboardAgent's HTTP port 0 (any free one) unless set."""
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT

    def node_init(self: Any, ray_params: Any, *args: Any, **kwargs: Any) -> None:
        if ray_params.dashboard_agent_listen_port == DEFAULT_DASHBOARD_AGENT_LISTEN_PORT:
            ray_params.dashboard_agent_listen_port = 0
        init(self, ray_params, *args, **kwargs)

    return node_init
