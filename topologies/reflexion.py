"""Reflexion: the executor tries, the reflector judges and writes lessons, retry with them.

    executor (haiku) ─ attempt 1 ─> reflector (sonnet) ─ failed, lessons ─┐
    executor + every lesson so far ─ attempt 2 ─> reflector ─ success ─> done   (≤ max_attempts)

Lessons accumulate: attempt n sees the lessons of attempts 1..n-1, so a mistake fixed once
stays fixed. The answer is the first successful attempt, else the last one. Attempts are
progress (``agent_completed`` events, topic ``attempt N``); only the answer is streamed as
``text`` under ``session.run()``, once the reflector has judged it.

Example (lessons so far go into the next attempt's prompt):
    >>> print(_attempt_prompt("Write a regex for ISO dates.", ["anchor it with ^ and $"]))
    Task: Write a regex for ISO dates.
    <BLANKLINE>
    Lessons from earlier attempts (apply all of them):
    - anchor it with ^ and $
    >>> ReflexionConfig(max_attempts=3).executor_model is None  # default: haiku
    True
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.messages import ArchitectureResult, Finding
from topologies.parsing import json_schema_prompt, parse_json
from topologies.run_context import RunContext


class ReflexionConfig(ArchitectureConfig):
    """Attempts, and the executor's and reflector's models."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    executor_model: str | None = None
    """Default: haiku."""
    reflector_model: str | None = None
    """Default: sonnet."""


class Reflection(BaseModel):
    """What the reflector answers."""

    success: bool
    lessons: list[str] = Field(default_factory=list)


class Attempt(BaseModel):
    """One try and the reflector's judgement of it."""

    model_config = ConfigDict(frozen=True)

    number: int
    answer: Finding
    success: bool
    lessons: tuple[str, ...] = ()


class ReflexionResult(ArchitectureResult):
    """Every attempt, whether one succeeded, and all the lessons learned."""

    kind: Literal["reflexion_result"] = "reflexion_result"  # type: ignore[assignment]
    attempts: tuple[Attempt, ...] = ()
    success: bool = False
    lessons: tuple[str, ...] = ()


class Reflexion(Architecture[ReflexionConfig, ReflexionResult]):
    """Executor tries; reflector writes lessons; retry with them."""

    name = "reflexion"
    description = "An executor tries; a reflector writes lessons; it retries with them."
    config_class = ReflexionConfig
    roles = (
        RoleSpec(name="executor", default_tier="haiku", config_field="executor_model",
                 final=True),
        RoleSpec(name="reflector", default_tier="sonnet", config_field="reflector_model"),
    )

    async def execute(self, task: str, run: RunContext) -> ReflexionResult:
        attempts: list[Attempt] = []
        lessons: list[str] = []
        schema = json_schema_prompt(Reflection)
        limit = self.config.max_attempts
        for number in range(1, limit + 1):
            await run.phase(f"attempt {number}", f"of at most {limit}", total=2)
            answer = await run.ask("executor", _attempt_prompt(task, lessons),
                                   topic=f"attempt {number}")
            review = await run.ask(
                "reflector", f"Task: {task}\n\nAttempt:\n{answer.text}\n\nAnswer in JSON "
                f"matching this schema: {schema}", topic=f"reflection {number}", max_tokens=512)
            judged = parse_json(review.text, Reflection, "reflector")
            new = [lesson.strip() for lesson in judged.lessons if lesson.strip()]
            attempts.append(Attempt(number=number, answer=answer, success=judged.success,
                                    lessons=tuple(new)))
            if judged.success:
                break
            lessons.extend(lesson for lesson in new if lesson not in lessons)
        last = attempts[-1]
        await run.answer(last.answer)
        return run.result(ReflexionResult, output=last.answer.text, attempts=tuple(attempts),
                          success=last.success, lessons=tuple(lessons))


def _attempt_prompt(task: str, lessons: list[str]) -> str:
    if not lessons:
        return task
    listed = "\n".join(f"- {lesson}" for lesson in lessons)
    return f"Task: {task}\n\nLessons from earlier attempts (apply all of them):\n{listed}"
