"""Debate: a proponent and an opponent argue for N rounds, then a judge decides.

    round 1: proponent ─> opponent
    round 2: proponent ─> opponent     (each sees the whole transcript so far)
    ...
    judge (sonnet) reads the transcript ─> verdict, WINNER: proponent | opponent | draw

The turns are sequential by nature (each answers the last), so the debaters run on a cheap
tier and only the judge on a stronger one.

The winner is the judge's last ``WINNER:`` line (judges sometimes quote the form first):
    >>> _winner("The form asks for 'WINNER: draw' but on balance... WINNER: **opponent**")
    'opponent'
    >>> _winner("A fine exchange.")
    'undecided'
    >>> DebateConfig(rounds=3).rounds
    3

A session runs it: ``create_session("debate", runtime=..., config={"rounds": 2})``, then
``(await session.query("Actors beat threads.")).winner``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.messages import ArchitectureResult, Finding
from topologies.run_context import RunContext

Winner = Literal["proponent", "opponent", "draw", "undecided"]
_WINNER = re.compile(r"winner\s*[:\-]\s*\**\s*(proponent|opponent|draw)", re.IGNORECASE)


class DebateConfig(ArchitectureConfig):
    """How many rounds, and the debaters' and judge's models."""

    rounds: int = Field(default=2, ge=1, le=10)
    """Exchanges of one proponent turn and one opponent turn."""
    debater_model: str | None = None
    """Both debaters' model (default: haiku)."""
    judge_model: str | None = None
    """Default: sonnet."""


class DebateRound(BaseModel):
    """One exchange."""

    model_config = ConfigDict(frozen=True)

    round: int
    proponent: Finding
    opponent: Finding


class DebateResult(ArchitectureResult):
    """The transcript, the verdict and the winner the judge named."""

    kind: Literal["debate_result"] = "debate_result"  # type: ignore[assignment]
    rounds: tuple[DebateRound, ...] = ()
    verdict: str = ""
    winner: Winner = "undecided"
    """``undecided`` when the judge named no winner in the asked-for form."""


class Debate(Architecture[DebateConfig, DebateResult]):
    """Proponent and opponent for N rounds -> judge."""

    name = "debate"
    description = "A proponent and an opponent argue for N rounds; a judge decides."
    config_class = DebateConfig
    roles = (
        RoleSpec(name="proponent", default_tier="haiku", config_field="debater_model"),
        RoleSpec(name="opponent", default_tier="haiku", config_field="debater_model"),
        RoleSpec(name="judge", default_tier="sonnet", config_field="judge_model", final=True),
    )

    async def execute(self, task: str, run: RunContext) -> DebateResult:
        transcript: list[str] = []
        rounds = []
        total = self.config.rounds
        for number in range(1, total + 1):
            await run.phase(f"round {number}", f"of {total}", total=2)
            turns = {}
            for side in ("proponent", "opponent"):
                turns[side] = await run.ask(side, _turn_prompt(task, transcript, number, total),
                                            topic=f"round {number}")
                transcript.append(f"[Round {number}, {side}]\n{turns[side].text}")
            rounds.append(DebateRound(round=number, **turns))
        await run.phase("judge", "weighing the arguments", total=1)
        verdict = await run.ask("judge", f"Proposition: {task}\n\nTranscript:\n\n" +
                                "\n\n".join(transcript), topic="verdict", final=True)
        return run.result(DebateResult, output=verdict.text, rounds=tuple(rounds),
                          verdict=verdict.text, winner=_winner(verdict.text))


def _turn_prompt(task: str, transcript: list[str], number: int, total: int) -> str:
    so_far = "\n\n".join(transcript) if transcript else "(no arguments yet: you open)"
    return (f"Proposition: {task}\n\nDebate so far:\n\n{so_far}\n\n"
            f"Your turn in round {number} of {total}.")


def _winner(verdict: str) -> Winner:
    """The last ``WINNER: x`` line of the verdict (judges sometimes quote the form first)."""
    found = _WINNER.findall(verdict)
    return found[-1].lower() if found else "undecided"  # type: ignore[return-value]
