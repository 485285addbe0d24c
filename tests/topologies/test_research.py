"""Research end to end on the emulator: who is asked what, in which order, on which tier."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.topologies.rig import Asked, TopologyRig
from topologies import create_session
from topologies.research import ResearchConfig, ResearchResult

pytestmark = pytest.mark.asyncio

SUBTOPICS = ["scheduling", "mailboxes", "supervision"]


def answer(asked: Asked) -> str:
    if "lead researcher" in asked.system:
        return "Here is the plan:\n" + json.dumps({"subtopics": SUBTOPICS})
    if "a researcher on a team" in asked.system:
        return "FINDING about " + asked.user.removeprefix("Subtopic: ")
    assert "synthesizer" in asked.system
    return "ANSWER built from " + str(asked.user.count("FINDING")) + " findings"


async def test_lead_then_researchers_in_parallel_then_synthesizer(rig: TopologyRig) -> None:
    with rig.script(answer) as script:
        async with create_session("research", config=ResearchConfig(max_parallel_agents=2),
                                  runtime=rig.runtime) as session:
            result = await session.query("  How do actor runtimes work?  ")
            rollup = rig.rollup(session.run_id)
            run_id = session.run_id
    asked = script.asked

    assert isinstance(result, ResearchResult)
    assert [a.tier for a in asked] == ["sonnet", "haiku", "haiku", "sonnet"]
    assert "lead researcher" in asked[0].system and "3 distinct subtopics" not in asked[0].system
    assert "2 distinct subtopics" in asked[0].system  # $count = max_parallel_agents
    # The lead planned 3 subtopics; it may keep only as many as researchers (2).
    assert sorted(a.user for a in asked[1:3]) == ["Subtopic: mailboxes", "Subtopic: scheduling"]
    assert all('"How do actor runtimes work?"' in a.system for a in asked[1:3])
    assert "synthesizer" in asked[3].system and asked[3].user.count("FINDING about") == 2
    assert result.subtopics == ("scheduling", "mailboxes")
    assert [f.topic for f in result.findings] == ["scheduling", "mailboxes"]
    assert result.output == "ANSWER built from 2 findings"
    assert result.agents[0] == "lead" and result.agents[-1] == "synthesizer"
    _check_ledger(rig, run_id, rollup, result)


def _check_ledger(rig: TopologyRig, run_id: str, rollup: dict, result: ResearchResult) -> None:
    names = {key.rsplit("/", 1)[1]: r for key, r in rollup.items()}
    assert set(names) == {"lead", "researcher-1", "researcher-2", "synthesizer"}
    assert all(key.startswith(f"{run_id}/research/") for key in rollup)
    assert names["lead"].calls == names["synthesizer"].calls == 1
    assert names["researcher-1"].calls + names["researcher-2"].calls == 2
    assert sum(r.cost_usd for r in rollup.values()) == result.cost_usd
    assert result.cost_usd == Decimal(rig.emulator.stats()["total_cost_usd"])


async def test_more_subtopics_than_researchers_queue_for_a_free_one(rig: TopologyRig) -> None:
    config = ResearchConfig(max_parallel_agents=2, max_subtopics=3, lead_model="haiku",
                            agent_configs={"researcher_2": {"model": "opus"}})
    with rig.script(answer) as script:
        async with create_session("research", config=config, runtime=rig.runtime) as session:
            result = await session.query("How do actor runtimes work?")
    researchers = script.by("a researcher on a team")

    assert len(result.findings) == 3 and result.output == "ANSWER built from 3 findings"
    assert script.asked[0].tier == "haiku"  # lead_model, and the synthesizer follows it
    assert script.asked[-1].tier == "haiku"
    tiers = {("researcher_2" if "researcher_2" in a.system else "researcher_1"): a.tier
             for a in researchers}
    assert tiers == {"researcher_1": "haiku", "researcher_2": "opus"}


async def test_run_streams_progress_and_the_synthesizers_text(rig: TopologyRig) -> None:
    with rig.script(answer):
        async with create_session("research", config={"max_parallel_agents": 3},
                                  runtime=rig.runtime) as session:
            events = [event async for event in session.run("How do actor runtimes work?")]
    kinds = [e.kind for e in events]

    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    assert [e.name for e in events if e.kind == "phase"] == ["plan", "research", "synthesize"]
    started = [e.agent for e in events if e.kind == "agent_started"]
    assert started[0] == "lead" and started[-1] == "synthesizer"
    assert sorted(started[1:-1]) == ["researcher_1", "researcher_2", "researcher_3"]
    text = "".join(e.text for e in events if e.kind == "text")
    result = events[-1].result
    assert text == result.output == "ANSWER built from 3 findings"
    assert {e.agent for e in events if e.kind == "text"} == {"synthesizer"}
    # Text streams after the synthesizer started and before it completed.
    first_text = kinds.index("text")
    assert kinds.index("agent_completed", first_text) > first_text
    completed = [e for e in events if e.kind == "agent_completed"]
    assert sum(e.cost_usd for e in completed) == result.cost_usd
