"""``ray job submit -- raytroupe run mapreduce ...`` against a local head node, as docs/cluster.md
tells users to run it.

The head is ``ray start --head --block`` in a subprocess of its own session, on free ports and
its own short temp dir, with ``RAY_AUTH_MODE=disabled`` for it and for the clients (a mode that
differs between them breaks the CLI: ``docs/ray-facts.md`` §5). Teardown stops that head by its
process id, not with ``ray stop``, which would stop every Ray on the machine (other test runs
included). The job reads settings the way a real head's jobs do: from the head's environment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.local_head import free_ports

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUESTION = "What caused the great flood of 1887?"




def _wait_until_healthy(url: str, head: subprocess.Popen[str], timeout_s: float = 90) -> None:
    """Poll the dashboard's public readiness route, with a bound."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"ray start exited with {head.returncode}")
        try:
            with opener.open(f"{url}/api/gcs_healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)  # the test's own thread, waiting for another process
    raise AssertionError(f"the head's dashboard at {url} was not healthy in {timeout_s:.0f} s")


def _stop(head: subprocess.Popen[str]) -> None:
    """SIGTERM the ``ray start --block`` process group we started; SIGKILL it if it lingers."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    gcs, client, dashboard, agent = free_ports(4)
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # Ray's socket paths must be short
    data_dir = tempfile.mkdtemp(prefix="rt-data-")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           # Where jobs on this head keep the Ledger and chunk results: the head's environment
           # is also where ANTHROPIC_API_KEY would come from (docs/cluster.md).
           "RAYTROUPE_DATA_DIR": data_dir}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
         f"--port={gcs}", f"--ray-client-server-port={client}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_until_healthy(url, head)
        yield {"url": url, "data_dir": data_dir, **{k: v for k, v in env.items()
                                                    if k in ("PATH", "RAY_AUTH_MODE")}}
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_ray_job_submit_runs_mapreduce_on_the_head(head: dict[str, str]) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": head["RAY_AUTH_MODE"], "PATH": head["PATH"]}
    env.pop("RAY_ADDRESS", None)
    for _ in range(3):
        done = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", head["url"], "--",
             "raytroupe", "run", "mapreduce", str(REPO / "examples" / "corpus"),
             "--question", QUESTION, "--address", "auto", "--chunk-size", "300", "--hosts",
             "2"], env=env, capture_output=True, text=True, timeout=300, check=False)
        output = done.stdout + done.stderr
        # A head whose dashboard is healthy may not have its job agent yet: Ray refuses the
        # submission (nothing ran) and says to try again later, as a user would.
        if "No available agent to submit job" not in output:
            break
        time.sleep(5)

    assert done.returncode == 0, output[-6000:]
    assert "succeeded" in output
    chunks = int(re.search(r"^chunks: (\d+)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert chunks > 12 and f"chunks_mapped: {chunks}" in output
    assert "Ledger by agent" in output and "Ledger by tier" in output
    assert "harbour-map.png: binary (NUL bytes)" in output
    # The job's Ledger journal and chunk results went where the head's environment said.
    data = Path(head["data_dir"])
    assert (data / "mapreduce" / "chunks.sqlite3").is_file()
    assert any(data.glob("ledger.sqlite*"))
