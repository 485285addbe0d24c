"""Map-reduce on a 3-worker ``ray.cluster_utils.Cluster``: spread, and a node lost mid-run.

The scenario runs in a subprocess (``multinode_scenario.py``): this process already holds the
session's single-node Ray, and a process joins one cluster at a time. It reports one JSON line,
which the tests read as a user would read the run's result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    # A private Ray temp dir: a Cluster writes its address to <temp>/ray/ray_current_cluster,
    # where any other process's plain ray.init() on this machine would find and join it.
    temp = tempfile.mkdtemp(prefix="rt-mn-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run([sys.executable, str(SCENARIO)], capture_output=True, text=True,
                              timeout=240, cwd=SCENARIO.parents[2], env=env, check=False)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    # Ray's own log lines (raylet state dumps) drown the scenario's traceback: leave them out.
    ours = [line for line in done.stderr.splitlines()
            if "(raylet)" not in line and "[state-dump]" not in line]
    assert done.returncode == 0 and lines, "scenario failed:\n" + "\n".join(ours[-60:])
    yield json.loads(lines[-1])


def test_mapper_hosts_land_on_at_least_two_nodes(report: dict[str, Any]) -> None:
    assert len(report["mapper_nodes"]) >= 2


def test_a_worker_node_removed_mid_run_and_the_answer_is_still_complete(
        report: dict[str, Any]) -> None:
    removed = report["removed"]
    # A worker hosting a mapper was removed while chunks were still being mapped...
    assert removed["node"] in report["worker_nodes"] and removed["node"] in report["mapper_nodes"]
    assert removed["at_requests"] < report["chunks"]
    # ...its calls were lost and sent to other hosts, and no record is missing from the answer.
    assert report["host_failures"] >= 1
    assert report["answer_complete"], f"missing records: {report['missing']}"
    assert report["mapped"] == report["chunks"]
    assert report["mapper_requests"] >= report["chunks"]
