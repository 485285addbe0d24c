"""Specialist pool: a router picks 1-4 specialists, they answer in parallel, an aggregator merges.

    question ─> router (haiku) ─ picks ─┬─> security (haiku) ─┐
                                        ├─> performance      ─┼─> aggregator (sonnet)
                                        └─> ... (1 to max_specialists)
                                                               ┘

Only the specialists the router picks are spawned. Each specialist is a role of its own (its
name is its agent key), so ``agent_configs={"security": {"model": "sonnet"}}`` upgrades one.

Example (a catalog of your own; names are agent keys, so ``router`` is taken):
    >>> config = SpecialistPoolConfig(specialists={"security": "threats", "speed": "latency"},
    ...                               max_specialists=2)
    >>> sorted(config.specialists)
    ['security', 'speed']
    >>> SpecialistPoolConfig(specialists={"router": "routes"})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for SpecialistPoolConfig
    ...

A session runs it: ``create_session("specialist_pool", runtime=..., config=config)``, then
``(await session.query("Is this login code safe and fast?")).chosen``.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.errors import TopologyError
from topologies.messages import ArchitectureResult, Finding
from topologies.parsing import json_schema_prompt, parse_json
from topologies.run_context import RunContext

DEFAULT_SPECIALISTS = {
    "architecture": "software design, module boundaries and trade-offs between designs",
    "security": "threats, vulnerabilities, authentication and safe handling of data",
    "performance": "latency, throughput, memory, profiling and scaling",
    "data": "data modelling, storage, queries and data quality",
    "testing": "test strategy, test design and reliability of test suites",
}
_NAME = r"^[a-z][a-z0-9_]*[a-z]$"


class SpecialistPoolConfig(ArchitectureConfig):
    """The catalog of specialists and how many the router may pick."""

    specialists: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SPECIALISTS),
                                        min_length=1, max_length=16)
    """Specialist name -> expertise (the router reads these to choose)."""
    max_specialists: int = Field(default=3, ge=1, le=4)
    """At most this many answer one question."""
    router_model: str | None = None
    """Default: haiku (choosing from a list is a small task)."""
    specialist_model: str | None = None
    """Default: haiku."""
    aggregator_model: str | None = None
    """Default: sonnet."""

    @field_validator("specialists")
    @classmethod
    def _names_are_keys(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        bad = [n for n in value if not re.match(_NAME, n) or n in ("router", "aggregator")]
        if bad:
            raise ValueError(f"specialist names must be lower_case words (not router or "
                             f"aggregator): {bad}")
        return value


class Routing(BaseModel):
    """What the router answers."""

    specialists: list[str] = Field(min_length=1)


class SpecialistPoolResult(ArchitectureResult):
    """Who was chosen, what each answered, and the merged answer."""

    kind: Literal["specialist_pool_result"] = "specialist_pool_result"  # type: ignore[assignment]
    chosen: tuple[str, ...] = ()
    answers: tuple[Finding, ...] = ()


class SpecialistPool(Architecture[SpecialistPoolConfig, SpecialistPoolResult]):
    """Router -> chosen specialists in parallel -> aggregator."""

    name = "specialist_pool"
    description = "A router picks 1-4 specialists; they answer in parallel; an aggregator merges."
    config_class = SpecialistPoolConfig

    def define_roles(self) -> tuple[RoleSpec, ...]:
        specialists = tuple(
            RoleSpec(name=name, description=expertise, min_count=1, max_count=1,
                     default_tier="haiku", config_field="specialist_model")
            for name, expertise in self.config.specialists.items())
        return (RoleSpec(name="router", default_tier="haiku", config_field="router_model"),
                *specialists,
                RoleSpec(name="aggregator", default_tier="sonnet",
                         config_field="aggregator_model", final=True))

    def prompt_name(self, role: str) -> str:
        return "specialist" if role in self.config.specialists else role

    async def execute(self, task: str, run: RunContext) -> SpecialistPoolResult:
        chosen = await self._route(task, run)
        await run.phase("specialists", ", ".join(chosen), total=len(chosen))
        answers = await asyncio.gather(*(
            run.ask(name, task, topic=name,
                    variables={"expertise": self.config.specialists[name]})
            for name in chosen))
        await run.phase("aggregate", "merging the answers", total=1)
        merged = "\n\n".join(f"## {a.topic}\n{a.text}" for a in answers)
        final = await run.ask("aggregator", f"Question: {task}\n\nSpecialists' answers:\n\n"
                              f"{merged}", topic="answer", final=True)
        return run.result(SpecialistPoolResult, output=final.text, chosen=tuple(chosen),
                          answers=tuple(answers))

    async def _route(self, question: str, run: RunContext) -> list[str]:
        cap, catalog = self.config.max_specialists, self.config.specialists
        await run.phase("route", "choosing specialists", total=1)
        schema = json_schema_prompt(Routing, specialists={
            "minItems": 1, "maxItems": cap, "items": {"enum": list(catalog)}})
        answer = await run.ask(
            "router", f"Question: {question}\n\nAnswer in JSON matching this schema: {schema}",
            topic="route", max_tokens=256, variables={
                "max_specialists": cap,
                "catalog": "\n".join(f"- {n}: {e}" for n, e in catalog.items())})
        picked = parse_json(answer.text, Routing, "router").specialists
        # Unknown names are the router's slip, not the user's: keep the known ones, in order.
        names = [n.strip().lower() for n in picked]
        chosen = list(dict.fromkeys(n for n in names if n in catalog))
        if not chosen:
            raise TopologyError(f"router chose no known specialist ({picked}); known: "
                                f"{', '.join(catalog)}")
        return chosen[:cap]
