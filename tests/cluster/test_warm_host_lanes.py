"""A warm host's agents over lanes (``actors/lane_client.py``): a lane serves the agent it was
opened for, not a later agent of the same name."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import ray

from actors import agent_handle
from actors.agent_host import spawn
from actors.messages import AgentSpec, AskRequest
from tests.cluster.test_warm_hosts import warm  # noqa: F401 - the module's warm host fixture
from tests.polling import wait_for_async


def test_an_agent_spawned_again_under_its_name_is_served_with_its_new_spec(
        warm: Any) -> None:  # noqa: F811 - the fixture imported above
    runtime, host, _ = warm
    name = f"again-{uuid.uuid4().hex[:6]}/t/lead"
    runs = [f"again-{uuid.uuid4().hex[:6]}" for _ in range(2)]

    async def main() -> None:  # one driver loop: a session, then another, same agent name
        for run_id in runs:
            agent = spawn(AgentSpec(name=name, tier="haiku", run_id=run_id), runtime.backend)
            assert (await agent_handle.ask(agent, AskRequest(prompt="Hi", max_tokens=5))).text
            await host.close.remote([name])  # the run's end (``agent_host.stop``)

    asyncio.run(main())
    ray.get(host.flush.remote())

    # each run's call billed to that run, not the second to the first run's spec
    assert [ray.get(runtime.ledger.totals.remote(run_id)).calls for run_id in runs] == [1, 1]


def test_closing_a_hosted_agent_at_its_runs_end_hangs_up_its_lanes(warm: Any) -> None:  # noqa: F811
    runtime, host, _ = warm
    run_id = f"close-{uuid.uuid4().hex[:6]}"
    name = f"{run_id}/t/lead"

    def connected(host: Any) -> int:
        return len(host._lanes._connections)

    async def main() -> None:  # a long-lived driver: its loop goes on after the run
        agent = spawn(AgentSpec(name=name, tier="haiku", run_id=run_id), runtime.backend)
        assert (await agent_handle.ask(agent, AskRequest(prompt="Hi", max_tokens=5))).text
        assert await host.__ray_call__.remote(connected) == 1
        await host.close.remote([name])  # the run's end (``agent_host.stop``)
        await wait_for_async(lambda: _none(host.__ray_call__.remote(connected)),
                             "the closed agent's lane to hang up", timeout_s=5)

    asyncio.run(main())  # a connection (two fds) per agent per run would pile up otherwise


async def _none(count: Any) -> bool:
    return await count == 0
