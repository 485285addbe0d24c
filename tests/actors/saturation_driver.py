"""A driver process for the saturation test: join the cluster, wait for the start signal,
hammer, report times.

Run as ``python -m tests.actors.saturation_driver ADDRESS NAMESPACE BASE_URL ITPM N DRIVER``;
prints one JSON line with the wall-clock span of its calls.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import ray

import cluster
from actors.messages import AgentSpec, AskRequest
from cluster.settings import Settings

PROMPT = "Summarise: actors own state; messages carry work; limits keep the fleet polite."


async def _hammer(agent: object, calls: int, in_flight: int) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            await agent.ask.remote(AskRequest(prompt=f"{PROMPT} ({i})", max_tokens=8))  # type: ignore[attr-defined]

    await asyncio.gather(*(one(i) for i in range(calls)))


def main() -> None:
    address, namespace, base_url, itpm, calls, driver = sys.argv[1:7]
    settings = Settings(anthropic_base_url=base_url, itpm=int(itpm), rpm=100_000,
                        otpm=10_000_000, max_concurrency=64, _env_file=None)
    runtime = cluster.init(address=address, settings=settings, namespace=namespace)
    agents = [runtime.spawn(AgentSpec(name=f"sat/{driver}/worker-{i}", run_id="saturation"))
              for i in range(2)]
    for agent in agents:
        agent.flush.remote().future().result()
    start_line = ray.get_actor("start-line", namespace=namespace)
    start_line.arrive_and_wait.remote().future().result()
    start = time.time()

    async def run() -> None:
        await asyncio.gather(*(_hammer(a, int(calls) // 2, 8) for a in agents))
        await asyncio.gather(*(a.flush.remote() for a in agents))

    asyncio.run(run())
    print(json.dumps({"driver": driver, "start": start, "end": time.time()}), flush=True)


if __name__ == "__main__":
    main()
