"""A run on a private Ray (``raytroupe run`` with nothing up), offline: its agents share one
Agent host, the emulator is served by the driver, Ray's DashboardAgent is not on the fixed port
another Ray may hold, the Ledger equals the emulator's bill, and every process it started (and
the emulator) is gone once it stops.

The driver is a subprocess: the suite's own Ray is already up in this process, and a private
Ray is what a fresh process starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

from tests.polling import wait_for

_DRIVER = """
import asyncio, json, os, sys, urllib.request
import ray
import cluster
from actors.agent_host import RUN_HOST
from cluster.settings import Settings
from topologies import create_session

def descendants(pid):
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found

settings = Settings(data_dir=sys.argv[1], _env_file=None)  # offline: no key, no base URL
runtime = cluster.init(address="local", settings=settings, include_dashboard=False,
                       host_agents=True, num_cpus=2)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def bill():
    url = runtime.backend.base_url + "/_emulator/stats"
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())["total_cost_usd"]

async def run():
    session = create_session("research", runtime=runtime, config={"max_parallel_agents": 2})
    async with session:
        result = await session.query("How do actor runtimes schedule work?")
        host = ray.get_actor(RUN_HOST, namespace=runtime.backend.namespace)
        stats = await host.stats.remote()
        rollup = await runtime.ledger.rollup.remote(session.run_id, "run")
    return result, stats, rollup[0].cost_usd, session.run_id

result, stats, ledger_usd, run_id = asyncio.run(run())
pids = descendants(os.getpid())
agent_port = ray.nodes()[0]["DashboardAgentListenPort"]
classes = ray.util.list_named_actors(all_namespaces=True)
billed = bill()
cluster.shutdown()
try:
    bill()
    emulator_stopped = False
except OSError:
    emulator_stopped = True
print(json.dumps({"agents": stats["agents"], "served": stats["served"].get(run_id),
                  "named": sorted(a["name"] for a in classes), "pids": pids,
                  "ledger_usd": str(ledger_usd), "result_usd": str(result.cost_usd),
                  "bill_usd": billed, "emulator_stopped": emulator_stopped,
                  "agent_port": agent_port}))
"""


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (reaped or not, a zombie is stopped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_private_runs_agents_share_one_host_and_everything_stops_with_it() -> None:
    temp = Path(tempfile.mkdtemp(prefix="rt8-priv-", dir="/tmp"))  # nosec B108 - short sockets
    env = {**os.environ, "RAY_TMPDIR": str(temp), "RAY_AUTH_MODE": "disabled"}
    for name in ("RAY_ADDRESS", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        env.pop(name, None)
    try:
        done = subprocess.run([sys.executable, "-c", _DRIVER, str(temp / "data")], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # Every agent of the run lived in the one host: lead, 2 researchers, synthesizer.
    assert sorted(a.rsplit("/", 1)[1] for a in seen["agents"]) == [
        "lead", "researcher-1", "researcher-2", "synthesizer"]
    assert seen["served"] == 4
    assert not [n for n in seen["named"] if n.count("/") == 2]  # no Agent actor of its own
    assert "emulator" not in seen["named"]  # offline, it is served by the driver
    # Not Ray's fixed 52365, which another Ray on the machine may hold (3.4 s of retries).
    assert seen["agent_port"] not in (0, 52365)
    assert Decimal(seen["ledger_usd"]) == Decimal(seen["result_usd"]) == \
        Decimal(seen["bill_usd"]) > 0
    # The private Ray stopped with the run (and its emulator, served by the driver): no
    # process it started is left.
    assert seen["emulator_stopped"]
    assert seen["pids"]
    wait_for(lambda: not [p for p in seen["pids"] if _alive(p)],
             "the private Ray's processes to be gone", timeout_s=30)
