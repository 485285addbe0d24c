"""Which Ray to use: the address given, a runtime that is up, or none (start a private one).

A running cluster is found the way Ray finds one (``RAY_ADDRESS``, else the current-cluster
file ``ray start`` writes under Ray's temp dir, ``$RAY_TMPDIR/ray``), but checked first with a
TCP connect of a few seconds: Ray itself retries an address that does not answer for minutes,
and a current-cluster file outlives a head that was killed. Addresses are checked for shape
before anything else, so a typo is one line, not a traceback.

Example:
    >>> parse_address("127.0.0.1:6379")
    ('127.0.0.1', 6379)
    >>> parse_address("ray://head:10001")
    ('head', 10001)
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from actors.errors import ConfigError

NAMESPACE = "raytroupe"
"""The Ray namespace of the cluster's singletons (drivers that share it share limits)."""
PROBE_TIMEOUT_S = 3.0
"""How long a TCP connect to a cluster's GCS may take before it counts as not there."""
_ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})")


def ray_temp_dir() -> Path:
    """Ray's own temp root, as Ray computes it (``$RAY_TMPDIR/ray``, default ``/tmp/ray``)."""
    # "/tmp" is Ray's own default root, not a file of ours.
    base = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"  # nosec B108
    return Path(base) / "ray"


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``ray://HOST:PORT`` -> (host, port); one clear error otherwise."""
    match = _ADDRESS.fullmatch(address.strip())
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(
            f"address {address!r} is not a Ray address: use HOST:PORT (the head's GCS port, "
            "6379 by default), ray://HOST:10001, auto (a running cluster) or local")
    return match.group(1).strip("[]"), int(match.group(2))


def answers(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True if something accepts a TCP connection at the address (a GCS, we assume)."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def running_cluster() -> str | None:
    """The address of a cluster that is up and answers (``RAY_ADDRESS`` or Ray's
    current-cluster file), or None."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env not in ("auto", "local"):
        return env if _is_gcs(env) and answers(env) else None
    path = ray_temp_dir() / "ray_current_cluster"
    try:
        found = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return found if found and _is_gcs(found) and answers(found) else None


def resolve(address: str | None) -> str | None:
    """The concrete address to join, or None to start a private Ray.

    None: a running cluster if there is one, else None. ``"local"``: None. ``"auto"``: a
    running cluster, or an error saying none was found. Anything else: checked for shape
    and that it answers, within a few seconds.
    """
    if address == "local":
        return None
    if address is None:
        return running_cluster()
    if address == "auto":
        found = running_cluster()
        if found is None:
            raise ConfigError(
                f"--address auto: no running Ray cluster found (RAY_ADDRESS is unset and "
                f"{ray_temp_dir() / 'ray_current_cluster'} names none that answers); start "
                "one with `raytroupe up`, or pass HOST:PORT")
        return found
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"address {address!r} is a dashboard URL: that is for `ray job submit`; a driver "
            "joins with the head's HOST:PORT (6379 by default) or auto")
    if not answers(address):
        raise ConfigError(f"address {address!r}: no Ray cluster answers there (nothing "
                          f"accepted a connection within {PROBE_TIMEOUT_S:.0f} s)")
    return address


@contextmanager
def attached(namespace: str) -> Iterator[str]:
    """Connected, quietly, to the runtime that is up for the block (never starting one);
    yields its address. For commands that look at the runtime (``status``, ``limits``)."""
    import ray

    address = running_cluster()
    if address is None:
        raise ConfigError("no runtime is up (nothing found via RAY_ADDRESS or Ray's "
                          "current-cluster file): start one with `raytroupe up`")
    ray.init(address=address, namespace=namespace, logging_level="error", log_to_driver=False)
    try:
        yield address
    finally:
        ray.shutdown()


def _is_gcs(address: str) -> bool:
    return _ADDRESS.fullmatch(address) is not None
