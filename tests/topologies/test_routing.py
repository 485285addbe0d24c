"""``agent_configs={"<role>": {"model": "auto"}}``: a topology role routed per request."""

from __future__ import annotations

import pytest

from tests.topologies.rig import TopologyRig
from tests.topologies.test_research import answer
from topologies import create_session
from topologies.research import ResearchConfig

pytestmark = pytest.mark.asyncio


async def test_a_role_set_to_auto_gets_its_tier_from_the_router(rig: TopologyRig) -> None:
    config = ResearchConfig(max_parallel_agents=2, agent_configs={"lead": {"model": "auto"}})
    with rig.script(answer) as script:
        async with create_session("research", config=config, runtime=rig.runtime) as session:
            await session.query("List how actor runtimes work.")
            await session.query("Compare and evaluate how actor runtimes schedule work.")
    leads = [a.tier for a in script.asked if "lead researcher" in a.system]
    synthesizers = [a.tier for a in script.asked if "synthesizer" in a.system]
    assert leads == ["haiku", "sonnet"]  # the decision tree, per request
    assert synthesizers == ["sonnet", "sonnet"]  # roles not set to auto keep their tier
