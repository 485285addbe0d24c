"""Pipeline, specialist pool, debate, critic-actor and reflexion end to end on the emulator.

Each case scripts the replies by role (read from the system prompt), then checks who was asked
what, in which order, on which tier; the typed result; and the Ledger's line per agent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterator

import pytest

from tests.topologies.rig import Asked, TopologyRig
from topologies import create_session
from topologies.critic_actor import CriticActorResult
from topologies.debate import DebateResult
from topologies.pipeline import PipelineResult
from topologies.reflexion import ReflexionResult
from topologies.specialist_pool import SpecialistPoolResult

pytestmark = pytest.mark.asyncio


async def _query(rig: TopologyRig, name: str, task: object, **options: object) -> tuple:
    async with create_session(name, runtime=rig.runtime, **options) as session:  # type: ignore[arg-type]
        result = await session.query(task)
        rollup = rig.rollup(session.run_id)
    return result, {key.rsplit("/", 1)[1]: r.calls for key, r in rollup.items()}


def _pipeline_answer(asked: Asked) -> str:
    stage = re.search(r'the "(\w+)" stage', asked.system).group(1)  # type: ignore[union-attr]
    item = asked.user.split("\n")[1]
    return f"{stage}<{item}>"


async def test_pipeline_items_flow_through_ordered_stages_concurrently(
        rig: TopologyRig) -> None:
    with rig.script(_pipeline_answer) as script:
        result, calls = await _query(rig, "pipeline", ["one", "two", "three"])
    stages = [re.search(r'the "(\w+)"', a.system).group(1) for a in script.asked]  # type: ignore[union-attr]

    assert isinstance(result, PipelineResult)
    assert [i.output for i in result.items] == ["review<one>", "review<two>", "review<three>"]
    for item in result.items:
        assert [f.topic.split(": ")[1] for f in item.stages] == ["analyze", "draft", "review"]
        assert [f.tier for f in item.stages] == ["haiku", "haiku", "sonnet"]
    # Every item entered the first stage before any reached the last: they overlap.
    assert stages[:3] == ["analyze"] * 3
    draft_inputs = [a.user for a in script.asked if 'the "draft"' in a.system]
    assert all("Previous stage output:\nanalyze<" in u for u in draft_inputs)
    assert calls == {"analyze": 3, "draft": 3, "review": 3}


async def test_pipeline_with_one_item_in_flight_runs_items_one_after_another(
        rig: TopologyRig) -> None:
    config = {"stages": ["outline", {"name": "write", "model": "opus"}], "max_items_in_flight": 1}
    with rig.script(_pipeline_answer) as script:
        result, _ = await _query(rig, "pipeline", ["a", "b"], config=config)
    order = [(re.search(r'the "(\w+)"', x.system).group(1), x.user.split("\n")[1], x.tier)  # type: ignore[union-attr]
             for x in script.asked]

    assert order == [("outline", "a", "haiku"), ("write", "a", "opus"),
                     ("outline", "b", "haiku"), ("write", "b", "opus")]
    assert result.output == "[1] write<a>\n\n[2] write<b>"


def _pool_answer(asked: Asked) -> str:
    if "You are the router" in asked.system:
        return json.dumps({"specialists": ["security", "astrology", "performance"]})
    if "You are the aggregator" in asked.system:
        return "MERGED " + " + ".join(re.findall(r"## (\w+)", asked.user))
    name = re.search(r"You are (\w+), a specialist", asked.system).group(1)  # type: ignore[union-attr]
    return f"{name} view"


async def test_specialist_pool_routes_to_known_specialists_and_aggregates(
        rig: TopologyRig) -> None:
    with rig.script(_pool_answer) as script:
        result, calls = await _query(rig, "specialist_pool", "Is this login handler safe?",
                                     agent_configs={"security": {"model": "sonnet"}})
    asked = script.asked

    assert isinstance(result, SpecialistPoolResult)
    assert "You are the router" in asked[0].system and asked[0].tier == "haiku"
    assert "- security: threats" in asked[0].system  # the catalog is in the router's prompt
    assert result.chosen == ("security", "performance")  # the unknown name is dropped
    middle = {re.search(r"You are (\w+),", a.system).group(1): a.tier for a in asked[1:3]}  # type: ignore[union-attr]
    assert middle == {"security": "sonnet", "performance": "haiku"}
    assert asked[3].tier == "sonnet" and result.output == "MERGED security + performance"
    assert calls == {"router": 1, "security": 1, "performance": 1, "aggregator": 1}


def _debate_answer(asked: Asked) -> str:
    if "You are the judge" in asked.system:
        return "Both argued well; the form asks 'WINNER: draw' but\nWINNER: opponent"
    side = "PRO" if "proponent in" in asked.system else "CON"
    return f"{side} turn {asked.user.count('[Round') + 1}"


async def test_debate_alternates_for_n_rounds_then_the_judge_decides(rig: TopologyRig) -> None:
    with rig.script(_debate_answer) as script:
        result, calls = await _query(rig, "debate", "Actors beat threads.",
                                     config={"rounds": 2})
    asked = script.asked

    assert isinstance(result, DebateResult)
    assert [a.user.rsplit("\n", 1)[-1] for a in asked[:4]] == [
        "Your turn in round 1 of 2.", "Your turn in round 1 of 2.",
        "Your turn in round 2 of 2.", "Your turn in round 2 of 2."]
    assert [r.proponent.text for r in result.rounds] == ["PRO turn 1", "PRO turn 3"]
    assert [r.opponent.text for r in result.rounds] == ["CON turn 2", "CON turn 4"]
    assert "[Round 1, proponent]\nPRO turn 1" in asked[1].user  # the opponent saw it
    assert "[Round 2, opponent]\nCON turn 4" in asked[4].user
    assert [a.tier for a in asked] == ["haiku"] * 4 + ["sonnet"]
    assert result.winner == "opponent"
    assert calls == {"proponent": 2, "opponent": 2, "judge": 1}


def _critic_script(scores: Iterator[int], comments: str) -> Callable[[Asked], str]:
    """The critic gives the next score; the actor's draft n is ``DRAFT n``."""
    def answer(asked: Asked) -> str:
        if "You are the critic" in asked.system:
            return json.dumps({"score": next(scores), "comments": comments})
        return f"DRAFT {asked.user.count(comments) + 1}"
    return answer


async def test_critic_actor_repeats_until_the_score_reaches_the_threshold(
        rig: TopologyRig) -> None:
    with rig.script(_critic_script(itertools.count(5, 3), "add an example")) as script:
        result, calls = await _query(rig, "critic_actor", "Explain backpressure.",
                                     config={"score_threshold": 8, "max_rounds": 4})

    assert isinstance(result, CriticActorResult)
    assert [(i.round, i.score, i.draft.text) for i in result.iterations] == [
        (1, 5, "DRAFT 1"), (2, 8, "DRAFT 2")]
    assert result.accepted and result.final_score == 8 and result.output == "DRAFT 2"
    second_draft = script.asked[2]
    assert "Critic's score: 5/10" in second_draft.user and "add an example" in second_draft.user
    assert [a.tier for a in script.asked] == ["haiku", "sonnet"] * 2
    assert calls == {"actor": 2, "critic": 2}


async def test_critic_actor_keeps_the_best_draft_when_none_is_good_enough(
        rig: TopologyRig) -> None:
    with rig.script(_critic_script(iter([6, 4]), "tighten")):
        result, _ = await _query(rig, "critic_actor", "Explain backpressure.",
                                 config={"max_rounds": 2})
    assert not result.accepted and result.final_score == 6 and result.output == "DRAFT 1"


async def test_reflexion_retries_with_accumulated_lessons_until_success(
        rig: TopologyRig) -> None:
    verdicts = iter([{"success": False, "lessons": ["cite a source"]},
                     {"success": False, "lessons": ["cite a source", "be brief"]},
                     {"success": True, "lessons": []}])

    def answer(asked: Asked) -> str:
        if "You are the reflector" in asked.system:
            return "Verdict: " + json.dumps(next(verdicts))
        return f"TRY with {asked.user.count('- ')} lessons"

    with rig.script(answer) as script:
        result, calls = await _query(rig, "reflexion", "Summarise the CAP theorem.",
                                     config={"max_attempts": 5})

    assert isinstance(result, ReflexionResult)
    assert [a.answer.text for a in result.attempts] == [
        "TRY with 0 lessons", "TRY with 1 lessons", "TRY with 2 lessons"]
    assert result.success and result.lessons == ("cite a source", "be brief")
    assert "- cite a source\n- be brief" in script.asked[4].user
    assert calls == {"executor": 3, "reflector": 3}


async def _streamed(rig: TopologyRig, name: str, task: str, **options: object) -> tuple:
    """What ``session.run()`` shows: the text events joined, and the drafts' progress topics."""
    text, progress = [], []
    async with create_session(name, runtime=rig.runtime, **options) as session:  # type: ignore[arg-type]
        async for event in session.run(task):
            if event.kind == "text":
                text.append(event.text)
            elif event.kind == "agent_completed":
                progress.append(event.topic)
    return "".join(text), progress


async def test_critic_actor_streams_only_the_accepted_draft_as_the_answer(
        rig: TopologyRig) -> None:
    with rig.script(_critic_script(iter([3, 9]), "add an example")):
        text, progress = await _streamed(rig, "critic_actor", "Explain backpressure.",
                                         config={"score_threshold": 8, "max_rounds": 3})
    assert text == "DRAFT 2"
    assert progress == ["draft 1", "critique 1", "draft 2", "critique 2"]


async def test_reflexion_streams_only_the_successful_attempt_as_the_answer(
        rig: TopologyRig) -> None:
    verdicts = iter([{"success": False, "lessons": ["be brief"]}, {"success": True}])

    def answer(asked: Asked) -> str:
        if "You are the reflector" in asked.system:
            return json.dumps(next(verdicts))
        return f"TRY with {asked.user.count('- ')} lessons"

    with rig.script(answer):
        text, progress = await _streamed(rig, "reflexion", "Summarise the CAP theorem.")
    assert text == "TRY with 1 lessons"
    assert progress == ["attempt 1", "reflection 1", "attempt 2", "reflection 2"]


async def test_pipeline_runs_as_many_items_at_once_as_max_items_in_flight_allows(
        rig: TopologyRig) -> None:
    """No hidden per-agent cap: 24 items on one stage's agent are 24 calls in flight."""
    items = 24
    state = {"in_flight": 0, "peak": 0}

    async def answer(asked: Asked) -> str:
        state["in_flight"] += 1  # the responder runs on the emulator's one event loop
        state["peak"] = max(state["peak"], state["in_flight"])
        try:
            for _ in range(200):  # wait (bounded) until every item has arrived
                if state["peak"] >= items:
                    break
                await asyncio.sleep(0.02)
            return "done"
        finally:
            state["in_flight"] -= 1

    with rig.script(answer):
        result, calls = await _query(rig, "pipeline", [f"item {i}" for i in range(items)],
                                     config={"stages": ["only"], "max_items_in_flight": items})
    assert len(result.items) == items and calls == {"only": items}
    assert state["peak"] == items
