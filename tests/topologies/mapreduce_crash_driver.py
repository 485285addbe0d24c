"""A map-reduce driver the resume test kills with SIGKILL in the middle of its map phase.

Usage: ``python mapreduce_crash_driver.py GCS_ADDRESS NAMESPACE BASE_URL DATA_DIR STORE_DIR``.
It joins the test's Ray cluster and its singletons (same namespace), maps the text it reads on
stdin, and prints ``mapping`` once the session is set up; the test then waits for some results
to be stored and kills it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import ray

import cluster
from cluster.settings import Settings
from topologies import create_session
from topologies.mapreduce import MapReduceTask

CONFIG = {"chunk_size": 60, "chunk_overlap": 0, "max_parallel_mappers": 2, "mapper_hosts": 1}
QUESTION = "Which records mention the bridge?"


async def _run(runtime: cluster.Runtime, text: str, store_dir: str) -> None:
    session = create_session("mapreduce", runtime=runtime,
                             config={**CONFIG, "store_dir": store_dir})
    async with session:
        print("mapping", flush=True)
        await session.query(MapReduceTask(question=QUESTION, text=text))


def main() -> None:
    gcs, namespace, base_url, data_dir, store_dir = sys.argv[1:6]
    ray.init(address=gcs, namespace=namespace, log_to_driver=False)
    settings = Settings(anthropic_base_url=base_url, data_dir=Path(data_dir), _env_file=None)
    runtime = cluster.init(settings=settings, namespace=namespace)
    asyncio.run(_run(runtime, sys.stdin.read(), store_dir))


if __name__ == "__main__":
    main()
