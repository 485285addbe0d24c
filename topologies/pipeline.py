"""Pipeline: ordered stages, one agent each; many items flow through the stages concurrently.

    item_1 ─> analyze ─> draft ─> review ─> output_1
    item_2 ────────> analyze ─> draft ─> review ─> output_2      (item_2 enters analyze while
    item_3 ──────────────> analyze ─> ...                          item_1 is in draft)

Each item goes through every stage in order; different items occupy different stages at the
same time, bounded by ``max_items_in_flight``, and each stage's channel bounds its own calls
(backpressure). A stage's model comes from ``PipelineStage.model`` or ``agent_configs`` by
stage name; by default the last stage (the one that writes the answer) runs on sonnet and the
others on haiku.

Example:
    >>> config = PipelineConfig(stages=[{"name": "outline"}, {"name": "write", "model": "sonnet"}])
    >>> session = create_session("pipeline", config=config)  # doctest: +SKIP
    >>> result = await session.query(["topic one", "topic two"])  # doctest: +SKIP
    >>> [item.output for item in result.items]                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.errors import ConfigError
from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.errors import EmptyInputError
from topologies.messages import ArchitectureResult, Finding
from topologies.run_context import RunContext

MAX_STAGES = 12


class PipelineStage(BaseModel):
    """One stage: its name (also its agent key), what it does, and optionally its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*[a-z]$")
    instructions: str = ""
    model: str | None = None


DEFAULT_STAGES = (
    PipelineStage(name="analyze", instructions="Work out what the input asks for and the key "
                  "facts, constraints and open questions."),
    PipelineStage(name="draft", instructions="Write a complete first answer from the analysis."),
    PipelineStage(name="review", instructions="Check the draft for errors and gaps and return "
                  "the corrected, final answer."),
)


class PipelineConfig(ArchitectureConfig):
    """The stages, in order, and how many items may be in the pipeline at once."""

    stages: tuple[PipelineStage, ...] = Field(default=DEFAULT_STAGES, min_length=1,
                                              max_length=MAX_STAGES)
    max_items_in_flight: int = Field(default=8, ge=1, le=256)
    """Items being processed at once (across all stages)."""
    stage_model: str | None = None
    """The model of stages that name none (default: haiku; the last stage sonnet)."""

    @field_validator("stages", mode="before")
    @classmethod
    def _names_become_stages(cls, value: Any) -> Any:
        if isinstance(value, Sequence) and not isinstance(value, str):
            return tuple({"name": v} if isinstance(v, str) else v for v in value)
        return value

    @field_validator("stages")
    @classmethod
    def _unique_names(cls, value: tuple[PipelineStage, ...]) -> tuple[PipelineStage, ...]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return value


class PipelineItem(BaseModel):
    """One input's trip through the stages."""

    model_config = ConfigDict(frozen=True)

    input: str
    stages: tuple[Finding, ...]
    """Each stage's output for this item, in stage order."""
    output: str


class PipelineResult(ArchitectureResult):
    """Every item's stage outputs; ``output`` is the single item's answer, or all joined."""

    kind: Literal["pipeline_result"] = "pipeline_result"  # type: ignore[assignment]
    items: tuple[PipelineItem, ...] = ()


class Pipeline(Architecture[PipelineConfig, PipelineResult]):
    """Ordered stages; items flow through them concurrently."""

    name = "pipeline"
    description = "Ordered stages, one agent each; many inputs flow through them concurrently."
    config_class = PipelineConfig

    def define_roles(self) -> tuple[RoleSpec, ...]:
        stages = self.config.stages
        return tuple(RoleSpec(name=s.name, description=s.instructions,
                              default_tier="sonnet" if i == len(stages) - 1 else "haiku",
                              config_field="stage_model", final=i == len(stages) - 1)
                     for i, s in enumerate(stages))

    def prompt_name(self, role: str) -> str:
        return "stage"

    def model_for(self, key: str) -> Any:
        stage = next(s for s in self.config.stages if s.name == self.role_of(key).name)
        if stage.model is not None and key not in self.config.agent_configs:
            return self._resolve(stage.model, f"stage {stage.name!r}")
        return super().model_for(key)

    def check_input(self, task: Any) -> list[str]:
        """One prompt, or a list of them (each an item that goes through every stage)."""
        items = [task] if isinstance(task, str) else list(task)
        if not all(isinstance(i, str) for i in items):
            raise ConfigError("pipeline: the input is a prompt or a list of prompts")
        items = [i.strip() for i in items]
        if not items or not all(items):
            raise EmptyInputError("pipeline: an input item is empty; give each item some text")
        return items

    async def execute(self, task: list[str], run: RunContext) -> PipelineResult:
        stages = self.config.stages
        await run.phase("pipeline", f"{len(task)} items through {len(stages)} stages",
                        total=len(task) * len(stages))
        gate = asyncio.Semaphore(self.config.max_items_in_flight)

        async def flow(index: int, item: str) -> PipelineItem:
            async with gate:
                return await self._through_stages(index, item, len(task), run)

        items = await asyncio.gather(*(flow(i, item) for i, item in enumerate(task)))
        output = items[0].output if len(items) == 1 else "\n\n".join(
            f"[{i + 1}] {item.output}" for i, item in enumerate(items))
        return run.result(PipelineResult, output=output, items=tuple(items))

    async def _through_stages(self, index: int, item: str, count: int,
                              run: RunContext) -> PipelineItem:
        stages, outputs = self.config.stages, []
        previous = ""
        for position, stage in enumerate(stages, start=1):
            prompt = f"Input:\n{item}" + (f"\n\nPrevious stage output:\n{previous}"
                                          if previous else "")
            finding = await run.ask(
                stage.name, prompt, topic=f"item {index + 1}: {stage.name}",
                final=count == 1 and position == len(stages),
                variables={"stage": stage.name, "position": position, "stages": len(stages),
                           "instructions": stage.instructions})
            outputs.append(finding)
            previous = finding.text
        return PipelineItem(input=item, stages=tuple(outputs), output=previous)
