"""Every plugin hook sees every agent call of every architecture (map-reduce's mappers too).

The Ledger is the reference: a plugin that counts ``on_agent_complete`` per agent must find
exactly the calls the Ledger billed per agent, and ``MetricsCollectorPlugin`` must report the
agents, time and cost the Ledger saw, with the seed's attribute names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.topologies.rig import TopologyRig
from topologies import MetricsCollectorPlugin, Plugin, create_session
from topologies.mapreduce import MapReduceTask

pytestmark = pytest.mark.asyncio
CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"

CASES = {
    "research": ({"max_parallel_agents": 2}, "How do actors work?"),
    "pipeline": ({}, "Draft a release note."),
    "mapreduce": ({"resume": False, "chunk_size": 600, "mapper_hosts": 2},
                  MapReduceTask(question="What caused the flood?", inputs=(str(CORPUS),))),
    "specialist_pool": ({"max_specialists": 2}, "Is this code safe?"),
    "debate": ({"rounds": 1}, "Tabs beat spaces."),
    "critic_actor": ({"max_rounds": 1}, "Write a haiku."),
    "reflexion": ({"max_attempts": 1}, "Write a regex for dates."),
}


class CallCounter(Plugin):
    """Counts spawns and completed calls per agent key; keeps the context to map names."""

    def __init__(self) -> None:
        self.spawned: set[str] = set()
        self.completed: Counter[str] = Counter()
        self.ctx: Any = None

    async def on_agent_spawn(self, ctx: Any, agent: str, spec: Any) -> None:
        self.spawned.add(agent)

    async def on_agent_complete(self, ctx: Any, agent: str, finding: Any) -> None:
        self.completed[agent] += 1
        self.ctx = ctx


@pytest.mark.parametrize("name", list(CASES))
async def test_hooks_and_metrics_cover_every_call_the_ledger_billed(
        rig: TopologyRig, name: str) -> None:
    config, task = CASES[name]
    counter, metrics = CallCounter(), MetricsCollectorPlugin()
    rig.emulator.reset()
    async with create_session(name, runtime=rig.runtime, config=config,
                              plugins=[counter, metrics]) as session:
        await session.query(task)
        by_agent = await session.ledger_rollup("agent")
        totals = await session.ledger_rollup("run")
    billed = {counter.ctx.agent_key(row.key): row.calls for row in by_agent}
    m = metrics.get_metrics()

    assert dict(counter.completed) == billed
    assert counter.spawned >= set(billed)
    if name == "mapreduce":  # every chunk was one mapper call, and the hooks saw each
        mapped = sum(n for key, n in billed.items() if key.startswith("mapper_"))
        assert mapped > 10 and {"mapper_1", "mapper_2"} <= set(billed)
    assert m.agent_count == len(counter.spawned)
    assert set(m.agent_durations) == set(billed)
    assert all(ms > 0 for ms in m.agent_durations.values())
    assert m.duration_ms >= max(m.agent_durations.values())
    assert m.estimated_cost_usd == totals[0].cost_usd > 0
    assert m.tool_call_count == 0
