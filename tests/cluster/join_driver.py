"""A driver process that joins the runtime that is up and asks one agent many questions.

Run by ``test_up.py`` three at a time: ``python -m tests.cluster.join_driver RUN_ID CALLS``.
It prints one JSON line: the run id, the replies it got, and how it joined.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ray.exceptions import RayActorError

import cluster
from actors.messages import AgentSpec, AskRequest

IN_FLIGHT = 4


async def _ask_all(agent: Any, calls: int) -> int:
    gate, done = asyncio.Semaphore(IN_FLIGHT), 0

    async def one(i: int) -> None:
        nonlocal done
        async with gate:
            for _ in range(100):
                try:
                    await agent.ask.remote(AskRequest(prompt=f"Question {i}", max_tokens=30))
                    done += 1
                    return
                except RayActorError:  # the agent's process went: ask its restarted self
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(one(i) for i in range(calls)))
    await agent.flush.remote()
    return done


def main() -> None:
    run_id, calls = sys.argv[1], int(sys.argv[2])
    runtime = cluster.init()
    agent = runtime.spawn(AgentSpec(name=f"{run_id}/join/worker", tier="haiku", run_id=run_id))
    replies = asyncio.run(_ask_all(agent, calls))
    print(json.dumps({"run": run_id, "replies": replies, "joined": runtime.joined}))
    cluster.shutdown()


if __name__ == "__main__":
    main()
