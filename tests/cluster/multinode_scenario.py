"""A map-reduce on a 3-worker ``ray.cluster_utils.Cluster``, losing a worker node mid-run.

Run as a subprocess by ``test_multinode.py``: the test process already runs the session's
single-node Ray, and one process can only be connected to one cluster. Prints ONE JSON line
with what the test checks: where the mapper hosts started, which node was removed and when,
and whether the answer still holds every record.

The corpus is 60 records (``rec-000`` ... ``rec-059``). Each mapper answers with the record ids
in its chunk after a delay; the reducer answers with the sorted, unique ids it read. So the
right answer is known exactly, and a chunk lost with the node would show as a missing id.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

import cluster
from cluster.settings import Settings
from emulator import run_emulator
from topologies import create_session
from topologies.mapreduce import MapReduceTask

RECORDS = 60
MAPPER_DELAY_S = 0.4
REMOVE_AFTER = 12
"""Mapper requests the emulator must have received before a worker node is removed."""
RUN_ID = "mr-multinode"
# Fast failure detection (docs/ray-facts.md §4): a dead node is noticed in about 2 s, not 15 s.
HEAD = {"num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0}}


class Mapper:
    """The emulator's responder: slow mappers listing their record ids, an exact reducer."""

    def __init__(self) -> None:
        self.mapper_requests = 0
        self.lock = threading.Lock()

    async def __call__(self, body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        ids = sorted(set(re.findall(r"\brec-\d{3}\b", user)))
        if body["system"][0]["text"].startswith("You write the final answer"):
            return " ".join(ids)
        with self.lock:
            self.mapper_requests += 1
        await asyncio.sleep(MAPPER_DELAY_S)
        return " ".join(ids) or "NOTHING RELEVANT"


async def _host_node(name: str) -> str:
    handle = ray.get_actor(name, namespace="raytroupe")
    return await handle.__ray_call__.remote(
        lambda _self: ray.get_runtime_context().get_node_id())


async def _run(runtime: cluster.Runtime, responder: Mapper,
               workers: dict[str, Any], c: Cluster) -> dict[str, Any]:
    text = "\n\n".join(f"Entry rec-{i:03d} describes the river wall and the gauge."
                       for i in range(RECORDS))
    config = {"chunk_size": 30, "chunk_overlap": 0, "max_parallel_mappers": 6,
              "mapper_hosts": 3, "store_dir": tempfile.mkdtemp()}
    removed: dict[str, Any] = {}

    async def remove_a_mapper_node() -> None:
        while responder.mapper_requests < REMOVE_AFTER:  # noqa: ASYNC110 (counted on another loop)
            await asyncio.sleep(0.05)
        for i in (1, 2, 3):
            node = await _host_node(f"{RUN_ID}/mapreduce/mapper-{i}")
            if node in workers:
                removed.update(node=node, mapper=i, at_requests=responder.mapper_requests)
                # A crash, not a drain; in a thread, so the map phase goes on meanwhile.
                await asyncio.to_thread(c.remove_node, workers[node], allow_graceful=False)
                return

    async with create_session("mapreduce", runtime=runtime, config=config,
                              run_id=RUN_ID) as session:
        killer = asyncio.create_task(remove_a_mapper_node())
        result = await session.query(MapReduceTask(question="Which records?", text=text))
        await killer
    expected = [f"rec-{i:03d}" for i in range(RECORDS)]
    return {"mapper_nodes": sorted(set(result.mapper_nodes.values())),
            "worker_nodes": sorted(workers), "removed": removed,
            "answer_complete": result.output.split() == expected,
            "missing": sorted(set(expected) - set(result.output.split())),
            "chunks": result.chunks, "mapped": result.chunks_mapped,
            "host_failures": result.host_failures,
            "mapper_requests": responder.mapper_requests}


@ray.remote(num_cpus=0)
def _node_of() -> str:
    return ray.get_runtime_context().get_node_id()


def main() -> None:
    c = Cluster(initialize_head=True, head_node_args=HEAD)
    try:
        workers = {}
        for i in range(3):
            node = c.add_node(num_cpus=1, resources={f"worker{i}": 1})
            workers[node.node_id] = node
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        # wait_for_nodes asks the GCS; the raylet that places the driver's actors learns of the
        # workers later (on a loaded box, after the hosts were placed: a soft affinity to a
        # node it does not know yet lands on one it does). A task needing each worker's own
        # resource runs only once that worker is in the raylet's view.
        ray.get([_node_of.options(resources={f"worker{i}": 0.001}).remote()
                 for i in range(3)], timeout=60)
        started = time.monotonic()
        with run_emulator(latency_s=0) as emu:
            responder = Mapper()
            emu.set_responder(responder)
            settings = Settings(anthropic_base_url=emu.base_url, _env_file=None,
                                data_dir=Path(tempfile.mkdtemp()))
            runtime = cluster.init(settings=settings)
            report = asyncio.run(_run(runtime, responder, workers, c))
        report["run_s"] = round(time.monotonic() - started, 1)
        print(json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        c.shutdown()


if __name__ == "__main__":
    main()
