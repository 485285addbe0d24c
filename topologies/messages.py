"""What topologies send and say: channel payloads, progress events and typed results.

Every type is a frozen pydantic v2 model with a literal ``kind``; events form one union
discriminated on it, so a consumer of ``session.run()`` can ``match event.kind``.

Example:
    >>> AgentStarted(agent="lead", role="lead", tier="sonnet").kind
    'agent_started'
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field

from actors.frozen import Frozen as _Frozen
from actors.messages import Usage
from actors.tiers import Tier

# -- channel payloads ------------------------------------------------------------------------


class Task(_Frozen):
    """A piece of work for one agent: what to do, and which logical agent does it."""

    kind: Literal["task"] = "task"
    agent: str
    """The logical agent's key (``researcher_1``), used for attribution and plugins."""
    prompt: str = Field(min_length=1)
    """The user turn the agent answers."""
    topic: str = ""
    """What the task is about (a subtopic, an item, a stage), for results and progress."""


class Finding(_Frozen):
    """One agent's answer to a :class:`Task`, with what it cost."""

    kind: Literal["finding"] = "finding"
    agent: str
    """The logical agent that wrote it."""
    topic: str = ""
    text: str
    tier: Tier
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
    latency_s: float = 0.0


# -- progress events ---------------------------------------------------------------------------


class RunStarted(_Frozen):
    """A run began: its id and architecture."""

    kind: Literal["run_started"] = "run_started"
    run_id: str
    architecture: str


class PhaseStarted(_Frozen):
    """The architecture entered a phase (``plan``, ``research``, ``round 2``...)."""

    kind: Literal["phase"] = "phase"
    name: str
    detail: str = ""
    total: int | None = None
    """How many agent calls the phase will make, when known (drives progress bars)."""


class AgentStarted(_Frozen):
    """A logical agent started a call."""

    kind: Literal["agent_started"] = "agent_started"
    agent: str
    role: str
    tier: Tier
    topic: str = ""


class AgentCompleted(_Frozen):
    """A logical agent finished a call: tokens, cost and time of that call."""

    kind: Literal["agent_completed"] = "agent_completed"
    agent: str
    role: str
    tier: Tier
    topic: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_s: float = 0.0


class TextChunk(_Frozen):
    """Streamed text of the run's final agent, as it arrives."""

    kind: Literal["text"] = "text"
    agent: str
    text: str


class RunCompleted(_Frozen):
    """The run finished; ``result`` is the architecture's typed result."""

    kind: Literal["run_completed"] = "run_completed"
    result: Any
    """An :class:`ArchitectureResult` subclass (typed per architecture)."""


Event = Annotated[RunStarted | PhaseStarted | AgentStarted | AgentCompleted | TextChunk |
                  RunCompleted, Field(discriminator="kind")]
"""Everything ``session.run()`` yields."""


# -- results -----------------------------------------------------------------------------------


class ArchitectureResult(_Frozen):
    """What every architecture returns; subclasses add their own typed fields.

    ``output`` is the final answer; ``cost_usd`` and ``usage`` sum the replies of this run
    (the Ledger is authoritative and equal; read it with ``session.ledger_rollup()``).
    """

    kind: Literal["result"] = "result"
    architecture: str
    run_id: str
    output: str
    """The final agent's answer."""
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
    duration_s: float = 0.0
    agents: tuple[str, ...] = ()
    """Logical agents that made calls, in first-call order."""
