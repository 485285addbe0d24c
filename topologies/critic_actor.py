"""Critic-actor: the actor drafts, the critic scores and comments, until good enough or N rounds.

    actor (haiku) ─ draft 1 ─> critic (sonnet) ─ score 5, comments ─┐
    actor ─ draft 2 (addresses the comments) ─> critic ─ score 8 ≥ threshold ─> done

The answer is the last draft the critic accepted, or the best-scored draft when no draft
reached ``score_threshold`` within ``max_rounds``. Drafts are progress (``agent_completed``
events, topic ``draft N``); only the answer is streamed as ``text`` under ``session.run()``,
once the critic has scored it.

Example (the config; a session runs it with ``create_session("critic_actor", runtime=...,
config=config)`` and ``result.iterations`` holds each draft's score):
    >>> config = CriticActorConfig(score_threshold=8)
    >>> config.max_rounds, config.actor_model, config.critic_model
    (3, None, None)
    >>> Critique(score=9, comments="tight").score >= config.score_threshold
    True
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.messages import ArchitectureResult, Finding
from topologies.parsing import json_schema_prompt, parse_json
from topologies.run_context import RunContext


class CriticActorConfig(ArchitectureConfig):
    """Rounds, the acceptance score, and both agents' models."""

    max_rounds: int = Field(default=3, ge=1, le=10)
    """Drafts at most."""
    score_threshold: int = Field(default=8, ge=0, le=10)
    """A draft scored at least this is accepted."""
    actor_model: str | None = None
    """Default: haiku."""
    critic_model: str | None = None
    """Default: sonnet."""


class Critique(BaseModel):
    """What the critic answers."""

    score: int = Field(ge=0, le=10)
    comments: str = ""


class Iteration(BaseModel):
    """One draft and its critique."""

    model_config = ConfigDict(frozen=True)

    round: int
    draft: Finding
    score: int
    comments: str


class CriticActorResult(ArchitectureResult):
    """Every draft with its score; whether one reached the threshold."""

    kind: Literal["critic_actor_result"] = "critic_actor_result"  # type: ignore[assignment]
    iterations: tuple[Iteration, ...] = ()
    final_score: int = 0
    accepted: bool = False


class CriticActor(Architecture[CriticActorConfig, CriticActorResult]):
    """Actor drafts, critic scores; repeat to a threshold or N rounds."""

    name = "critic_actor"
    description = "An actor drafts and a critic scores and comments, until good enough."
    config_class = CriticActorConfig
    roles = (
        RoleSpec(name="actor", default_tier="haiku", config_field="actor_model", final=True),
        RoleSpec(name="critic", default_tier="sonnet", config_field="critic_model"),
    )

    async def execute(self, task: str, run: RunContext) -> CriticActorResult:
        cfg, iterations = self.config, []
        schema = json_schema_prompt(Critique, score={"minimum": 0, "maximum": 10})
        for number in range(1, cfg.max_rounds + 1):
            await run.phase(f"round {number}", f"of at most {cfg.max_rounds}", total=2)
            draft = await run.ask("actor", _draft_prompt(task, iterations), topic=f"draft {number}")
            review = await run.ask(
                "critic", f"Request: {task}\n\nDraft:\n{draft.text}\n\nAnswer in JSON matching "
                f"this schema: {schema}", topic=f"critique {number}", max_tokens=512,
                variables={"threshold": cfg.score_threshold})
            critique = parse_json(review.text, Critique, "critic")
            iterations.append(Iteration(round=number, draft=draft, score=critique.score,
                                        comments=critique.comments))
            if critique.score >= cfg.score_threshold:
                break
        best = iterations[-1] if iterations[-1].score >= cfg.score_threshold else \
            max(iterations, key=lambda i: i.score)
        await run.answer(best.draft)
        return run.result(CriticActorResult, output=best.draft.text, iterations=tuple(iterations),
                          final_score=best.score, accepted=best.score >= cfg.score_threshold)


def _draft_prompt(task: str, iterations: list[Iteration]) -> str:
    if not iterations:
        return task
    last = iterations[-1]
    return (f"Request: {task}\n\nYour previous draft:\n{last.draft.text}\n\n"
            f"Critic's score: {last.score}/10\nCritic's comments: {last.comments}\n\n"
            "Write the improved draft.")
