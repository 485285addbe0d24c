"""Research: a lead splits the question, researchers work in parallel, a synthesizer answers.

    question ─> lead (sonnet) ─ subtopics ─┬─> researcher_1 (haiku) ─┐
                                           ├─> researcher_2 (haiku) ─┼─> synthesizer (sonnet)
                                           └─> ...  (at most max_parallel_agents at once) ─┘

Cheap workers gather, a stronger model plans and writes: the guide's recommended "mixed"
configuration is the default. Each researcher is its own agent (its own Ledger line); subtopics
beyond the number of researchers queue for the next free one.

Example (the synthesizer runs on the lead's model unless told otherwise):
    >>> config = ResearchConfig(max_parallel_agents=3, lead_model="opus")
    >>> config.synthesizer_model, config.subagent_model
    ('opus', None)

A session runs it: ``create_session("research", runtime=..., config=config)``, then
``[f.topic for f in (await session.query("How do actors schedule?")).findings]``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.messages import ArchitectureResult, Finding
from topologies.parsing import json_schema_prompt, parse_json
from topologies.run_context import RunContext

MAX_RESEARCHERS = 16


class ResearchConfig(ArchitectureConfig):
    """The guide's ``ResearchConfig``: parallelism and the lead's and subagents' models."""

    max_parallel_agents: int = Field(default=4, ge=1, le=MAX_RESEARCHERS)
    """Researchers, hence subagent calls in flight at once."""
    max_subtopics: int | None = Field(default=None, ge=1, le=64)
    """Subtopics the lead may plan (default: one per researcher)."""
    lead_model: str | None = None
    """The lead's model (default: sonnet)."""
    subagent_model: str | None = None
    """The researchers' model (default: haiku)."""
    synthesizer_model: str | None = None
    """The synthesizer's model (default: the lead's)."""
    researcher_max_tokens: int = Field(default=1024, gt=0)
    """Output cap of a researcher's report."""

    @model_validator(mode="before")
    @classmethod
    def _synthesizer_follows_lead(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("synthesizer_model") is None:
            data = {**data, "synthesizer_model": data.get("lead_model")}
        return data


class Plan(BaseModel):
    """What the lead answers."""

    subtopics: list[str] = Field(min_length=1)


class ResearchResult(ArchitectureResult):
    """The answer, the lead's plan and every researcher's finding."""

    kind: Literal["research_result"] = "research_result"  # type: ignore[assignment]
    subtopics: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()


class Research(Architecture[ResearchConfig, ResearchResult]):
    """Lead -> parallel researchers -> synthesizer."""

    name = "research"
    description = "A lead splits the question; researchers dig in parallel; a synthesizer answers."
    config_class = ResearchConfig
    roles = (
        RoleSpec(name="lead", description="plans subtopics", default_tier="sonnet",
                 config_field="lead_model"),
        RoleSpec(name="researcher", description="researches one subtopic at a time",
                 min_count=1, max_count=MAX_RESEARCHERS, default_tier="haiku",
                 config_field="subagent_model"),
        RoleSpec(name="synthesizer", description="writes the answer", default_tier="sonnet",
                 config_field="synthesizer_model", final=True),
    )

    def role_counts(self) -> dict[str, int]:
        return {"lead": 1, "researcher": self.config.max_parallel_agents, "synthesizer": 1}

    async def execute(self, task: str, run: RunContext) -> ResearchResult:
        subtopics = await self._plan(task, run)
        findings = await self._research(task, subtopics, run)
        await run.phase("synthesize", "combining the findings", total=1)
        report = "\n\n".join(f"## {f.topic}\n{f.text}" for f in findings)
        answer = await run.ask("synthesizer", f"Question: {task}\n\nFindings:\n\n{report}",
                               topic="answer", final=True)
        return run.result(ResearchResult, output=answer.text, subtopics=tuple(subtopics),
                          findings=tuple(findings))

    async def _plan(self, question: str, run: RunContext) -> list[str]:
        count = self.config.max_subtopics or self.config.max_parallel_agents
        await run.phase("plan", f"splitting the question into {count} subtopics", total=1)
        schema = json_schema_prompt(Plan, subtopics={"minItems": count, "maxItems": count})
        plan = await run.ask("lead", f"{question}\n\nAnswer in JSON matching this schema: "
                             f"{schema}", topic="plan", variables={"count": count},
                             max_tokens=512)
        subtopics = [s.strip() for s in parse_json(plan.text, Plan, "lead").subtopics]
        return [s for s in subtopics if s][:count] or [question]

    async def _research(self, question: str, subtopics: list[str],
                        run: RunContext) -> list[Finding]:
        researchers = self.agent_keys("researcher")
        await run.phase("research", f"{len(subtopics)} subtopics, {len(researchers)} "
                        "researchers", total=len(subtopics))
        free: asyncio.Queue[str] = asyncio.Queue()
        for key in researchers:
            free.put_nowait(key)

        async def one(subtopic: str) -> Finding:
            # A researcher takes one subtopic at a time: parallelism is the researcher count.
            key = await free.get()
            try:
                prompt = f"Subtopic: {subtopic}"
                if run.crew.has_tools(key):
                    prompt += "\n\nUse your tools to find sources before you answer."
                return await run.ask(key, prompt, topic=subtopic,
                                     max_tokens=self.config.researcher_max_tokens)
            finally:
                free.put_nowait(key)

        return list(await asyncio.gather(*(one(s) for s in subtopics)))
