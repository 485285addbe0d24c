"""A run's end gives its limiter stock back at once, so the next job starts with full buckets.

Its mapper hosts and its reducer are Agent actors of the run, each with a RateLimiter lease
holding stock (tokens and slots already taken from the cluster's buckets). Killed with it, that
stock would be missing from the buckets until the lease's TTL (~6 s): a job starting meanwhile
under a binding limit started 11-13k input tokens short (benchmarks/mapreduce.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import ray

from actors.ratelimiter import DEFAULT_LEASE_TTL_S
from tests.topologies.rig import Asked, TopologyRig
from topologies import create_session
from topologies.mapreduce import MapReduceTask


def _answer(asked: Asked) -> str:
    return "a note on the weir" if "mappers" in asked.system else "the answer"


def test_a_finished_run_leaves_no_lease_and_no_held_stock_at_the_limiter(
        rig: TopologyRig, tmp_path: Path) -> None:
    text = "\n\n".join(f"Record {i:02d} notes the bridge and the weir on the river Tarrow."
                       for i in range(12))
    config = {"chunk_size": 20, "chunk_overlap": 0, "mapper_hosts": 2, "store_dir": tmp_path}

    async def run() -> float:
        async with create_session("mapreduce", runtime=rig.runtime, config=config) as s:
            await s.query(MapReduceTask(question="What of the weir?", text=text))
        return time.monotonic()

    with rig.script(_answer) as script:
        ended = asyncio.run(run())
    status = ray.get(rig.runtime.limiter.status.remote())
    assert time.monotonic() - ended < DEFAULT_LEASE_TTL_S / 2  # long before any lease expiry
    assert len(script.asked) == 13  # 12 chunks and the reducer, all through the limiter
    # The two hosts' and the reducer's leases were closed, not left to expire: nothing held.
    assert status.leases == 0
    assert status.buckets
    assert [(b.key.tier, b.held.as_tuple(), b.in_use) for b in status.buckets] == \
        [(b.key.tier, (0, 0, 0), 0) for b in status.buckets]
