"""A real ``redis-server`` for the response cache's Redis tests: a free loopback port, a temp
dir, stopped by its pid. Tests skip, with the reason, when the server or redis-py is missing
(``.ci/run`` installs the Debian package, the ``dev`` extra installs redis-py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_SERVER = Path("/usr/bin/redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """Start redis-server in ``workdir``; yield its ``redis://`` URL; stop it by pid."""
    if not REDIS_SERVER.exists():
        pytest.skip(f"{REDIS_SERVER} is missing: apt-get install redis-server (.ci/run does)")
    pytest.importorskip("redis", reason="redis-py is missing: pip install 'raytroupe[redis]'")
    port = _free_port()
    server = subprocess.Popen([str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", str(workdir), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
