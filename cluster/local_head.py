"""The local Ray head that ``raytroupe up`` runs in the background, and its record on disk.

The head is ``ray start --head --block`` in a process group of its own, with its own temp dir
(``$RAY_TMPDIR/ray/raytroupe-up``) and a log file there. ``up`` writes :class:`UpRecord` (the
pid, the addresses, the auth mode) next to Ray's current-cluster file, and writes that file
too, so every ``ray.init()``, ``raytroupe run`` and ``ray`` CLI on this machine finds the head
the way Ray finds one. ``down`` stops that process group by its pid (SIGTERM, then SIGKILL
after a grace period), never with ``ray stop``, which stops every Ray on the machine.

Example:
    >>> UpRecord.path().name
    'raytroupe-up.json'
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from actors.errors import RaytroupeError
from cluster.discovery import answers, ray_temp_dir

START_TIMEOUT_S = 90.0
STOP_GRACE_S = 30.0


class UpRecord(BaseModel):
    """What ``up`` started: enough for ``down`` to stop it and for drivers to find it."""

    model_config = ConfigDict(frozen=True)

    pid: int | None
    """The ``ray start --block`` process (its group holds every Ray process); None if ``up``
    joined a cluster it did not start."""
    address: str
    """The GCS address drivers join."""
    dashboard_url: str | None
    temp_dir: str | None
    auth_mode: str
    version: str

    @staticmethod
    def path() -> Path:
        return ray_temp_dir() / "raytroupe-up.json"

    @classmethod
    def load(cls) -> UpRecord | None:
        """The record of a runtime that is up, or None (a stale record is removed)."""
        try:
            record = cls.model_validate_json(cls.path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.pid is not None and not _alive(record.pid):
            record.forget()
            return None
        return record

    def save(self) -> None:
        self.path().parent.mkdir(parents=True, exist_ok=True)
        self.path().write_text(self.model_dump_json(indent=1), encoding="utf-8")

    def forget(self) -> None:
        """Remove this record and Ray's current-cluster file if it still names our head."""
        self.path().unlink(missing_ok=True)
        current = ray_temp_dir() / "ray_current_cluster"
        try:
            if current.read_text(encoding="utf-8").strip() == self.address:
                current.unlink()
        except OSError:
            pass


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (``up --port 0`` and tests use them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_head(*, port: int, dashboard_port: int, num_cpus: int | None,
               auth_mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``ray start --head --block`` in the background; return it and its temp dir."""
    temp_dir = ray_temp_dir() / "raytroupe-up"
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        raise RaytroupeError("the `ray` command is not installed next to raytroupe")
    # The dashboard agent (which runs `ray job submit`'s jobs) gets a free port: its default,
    # 52365, is taken by any other Ray head on the machine, and then no job can be submitted.
    agent_port, = free_ports(1)
    args = [ray, "start", "--head", "--block", f"--port={port}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    env = {**os.environ, "RAY_AUTH_MODE": auth_mode}
    env.pop("RAY_ADDRESS", None)
    log = open(temp_dir / "up.log", "ab")  # the head keeps writing it after we close ours
    head = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return head, temp_dir


def wait_until_up(head: subprocess.Popen[bytes], address: str, dashboard_url: str,
                  log: Path) -> None:
    """Wait (bounded) until the GCS and the dashboard answer; else stop it and say why."""
    deadline = time.monotonic() + START_TIMEOUT_S
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RaytroupeError(f"the Ray head exited with code {head.returncode} while "
                                 f"starting: {_last_line(log)}")
        if answers(address, timeout_s=1.0):
            try:
                with opener.open(f"{dashboard_url}/api/gcs_healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.25)  # a CLI process waiting for another process, not an event loop
    stop(head.pid)
    raise RaytroupeError(f"the Ray head did not come up within {START_TIMEOUT_S:.0f} s "
                         f"(its log: {log})")


def stop(pid: int, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM the process group of ``pid``; SIGKILL it after ``grace_s``. True if it was up."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)  # the CLI waiting for a process to end, not an event loop
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child (tests): reap it
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an orphan that exited stays a zombie until its new parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
