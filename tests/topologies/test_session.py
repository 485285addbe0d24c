"""The session API's checks: one clear error per bad input, raised before anything is spent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors.errors import BudgetExceeded, ConfigError
from tests.topologies.rig import Asked, TopologyRig
from topologies import Architecture, RoleSpec, create_session, get_available_architectures, init
from topologies.errors import (
    EmptyInputError,
    PromptTemplateError,
    RoleCardinalityError,
    UnknownArchitecture,
)
from topologies.messages import ArchitectureResult
from topologies.research import ResearchConfig
from topologies.run_context import RunContext

pytestmark = pytest.mark.asyncio

SEVEN = {"research", "pipeline", "specialist_pool", "debate", "critic_actor", "reflexion"}


async def test_the_registry_lists_every_architecture_with_a_description() -> None:
    available = get_available_architectures()
    assert SEVEN <= set(available) and all(available[name] for name in SEVEN)
    assert init is create_session


@pytest.mark.parametrize(("name", "options", "error", "message"), [
    ("reseach", {}, UnknownArchitecture, "unknown architecture 'reseach': choose one of "),
    ("research", {"config": {"max_parallel_agents": 0}}, ConfigError,
     "ResearchConfig.max_parallel_agents = 0: Input should be greater than or equal to 1"),
    ("research", {"config": {"max_paralel_agents": 2}}, ConfigError,
     "ResearchConfig.max_paralel_agents = 2: Extra inputs are not permitted"),
    ("research", {"agent_configs": {"researcher_9": {"model": "haiku"}}}, ConfigError,
     "agent_configs names 'researcher_9', which is no agent or role here"),
    ("research", {"agent_configs": {"lead": {"model": "gpt-4"}}}, ConfigError,
     "agent_configs['lead'] is 'gpt-4', which is neither a tier"),
    ("debate", {"model": "opus-9"}, ConfigError, "model= is 'opus-9'"),
    ("debate", {"config": ResearchConfig()}, ConfigError, "debate takes a DebateConfig"),
    ("pipeline", {"config": {"stages": ["a_b", "a_b"]}}, ConfigError, "stage names must be unique"),
    ("research", {"budget_usd": "-1"}, ConfigError, "budget_usd must be more than 0"),
    ("research", {"config": {"prompts_dir": "/no/such/dir"}}, ConfigError, "is not a folder"),
])
async def test_bad_input_fails_at_creation_with_one_clear_error(
        rig: TopologyRig, name: str, options: dict, error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        create_session(name, runtime=rig.runtime, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_role_count_outside_its_bounds_is_refused_at_creation(rig: TopologyRig) -> None:
    class Panel(Architecture):  # type: ignore[type-arg]
        roles = (RoleSpec(name="judge", min_count=3, max_count=5),)

        def role_counts(self) -> dict[str, int]:
            return {"judge": 2}

        async def execute(self, task: str, run: object) -> None:
            raise AssertionError("never runs")

    with pytest.raises(RoleCardinalityError, match="role 'judge' needs between 3 and 5 agents"):
        create_session(Panel, runtime=rig.runtime)


async def test_an_empty_prompt_spawns_nothing_and_sends_nothing(rig: TopologyRig) -> None:
    with rig.script(lambda asked: "unused") as script:
        session = create_session("research", runtime=rig.runtime)
        with pytest.raises(EmptyInputError, match="research: the prompt is empty"):
            await session.query("   ")
        with pytest.raises(EmptyInputError, match="pipeline: an input item is empty"):
            await create_session("pipeline", runtime=rig.runtime).query(["ok", ""])
        await session.close()
    assert script.asked == [] and session.crew is None


async def test_a_budget_too_small_for_one_call_stops_before_any_request(
        rig: TopologyRig) -> None:
    with rig.script(lambda asked: "unused") as script:
        async with create_session("debate", runtime=rig.runtime,
                                  budget_usd=Decimal("0.000001")) as session:
            with pytest.raises(BudgetExceeded, match=r"budget \$0.000001 would be exceeded"):
                await session.query("Tabs beat spaces.")
    assert script.asked == []


async def test_prompts_come_from_files_with_template_variables(
        rig: TopologyRig, tmp_path: Path) -> None:
    (tmp_path / "actor.md").write_text("You write for $company about $question.\n")
    config = {"prompts_dir": tmp_path, "template_vars": {"company": "Acme"}, "max_rounds": 1,
              "score_threshold": 0}
    with rig.script(lambda a: '{"score": 9}' if "critic" in a.system else "draft") as script:
        async with create_session("critic_actor", config=config, runtime=rig.runtime) as s:
            await s.query("backpressure")
    assert script.asked[0].system == "You write for Acme about backpressure."
    assert "You are the critic" in script.asked[1].system  # no file given: the shipped one

    (tmp_path / "actor.md").write_text("Hello $nobody\n")
    with rig.script(lambda a: "x") as script:
        async with create_session("critic_actor", config=config, runtime=rig.runtime) as s:
            with pytest.raises(PromptTemplateError, match=r"uses \$nobody, which has no value"):
                await s.query("backpressure")
    assert script.asked == []


async def test_session_model_applies_to_roles_the_config_leaves_open(rig: TopologyRig) -> None:
    def answer(asked: Asked) -> str:
        return "WINNER: draw" if "judge" in asked.system else "point"

    with rig.script(answer) as script:
        async with create_session("debate", model="opus", config={"rounds": 1},
                                  agent_configs={"judge": {"model": "haiku"}},
                                  runtime=rig.runtime) as session:
            result = await session.query("Tabs beat spaces.")
    assert [a.tier for a in script.asked] == ["opus", "opus", "haiku"]
    assert result.winner == "draw"


async def test_on_first_text_is_called_once_as_a_streamed_answer_starts(
        rig: TopologyRig, tmp_path: Path) -> None:
    """``run.ask(..., on_first_text=...)``: called once, before the answer's first text event
    (map-reduce stops its mapper hosts there, once the reducer's request is out); a run that
    does not stream its answer (``query``) never calls it."""
    (tmp_path / "speaker.md").write_text("You answer briefly.\n")
    seen: list[str] = []

    class Teller(Architecture):  # type: ignore[type-arg]
        roles = (RoleSpec(name="speaker", default_tier="haiku", final=True),)

        async def execute(self, task: str, run: RunContext) -> ArchitectureResult:
            finding = await run.ask("speaker", task, final=True,
                                    on_first_text=lambda: seen.append("first"))
            return run.result(ArchitectureResult, output=finding.text)

    with rig.script(lambda asked: "one two three four five"):
        async with create_session(Teller, config={"prompts_dir": tmp_path},
                                  runtime=rig.runtime) as session:
            async for event in session.run("Say five words."):
                if event.kind == "text":
                    seen.append(event.text)
            assert seen[0] == "first" and seen.count("first") == 1
            assert "".join(seen[1:]) == "one two three four five"
            seen.clear()
            result = await session.query("Say five words.")
    assert result.output == "one two three four five" and seen == []
