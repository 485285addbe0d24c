"""Keep Ray's own messages off a CLI command's stdout, which is the command's answer.

A Ray driver prints the cluster's warnings (the raylet's "N PYTHON worker processes have been
started ...", out-of-memory kills, actor deaths) and, with ``log_to_driver``, its workers' prints
from background threads to ``sys.stdout``; Ray has no option to send them elsewhere. In a
``raytroupe run`` they would land inside the answer, or break ``--json``. This moves every such
message to stderr, where the user still sees it and a pipe does not.

Example:
    >>> send_ray_messages_to_stderr()        # doctest: +SKIP
    >>> runtime = cluster.init()             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_MARK = "_raytroupe_to_stderr"


def send_ray_messages_to_stderr() -> None:
    """Route Ray's driver-side message printing to stderr (idempotent; for this process).

    Both of Ray's printers go through the module-level ``print_to_stdstream``: the error
    listener looks it up on every message, the worker-log printer binds it when the driver
    connects, so call this before ``ray.init`` (``cluster.init``).
    """
    from ray._private import worker as ray_worker

    printer = ray_worker.print_to_stdstream
    if getattr(printer, _MARK, False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    setattr(to_stderr, _MARK, True)
    ray_worker.print_to_stdstream = to_stderr
