"""A topology wired by hand from agents and typed channels: a tagline contest.

    brief ─ fan_out ─┬─> writer-1 (haiku) ─┐
                     ├─> writer-2 (haiku) ─┼─ fan_in ─> editor (sonnet) ─> the winner
                     └─> writer-3 (haiku) ─┘

Three cheap writers get the same brief at once (one copy in the object store, whatever its
size), their drafts are gathered as they finish, and a stronger editor picks one. Every call is
a typed message on a bounded channel, and the Ledger attributes each to its agent.

Run it offline (the emulator answers):  python examples/custom_topology.py "a bakery"
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal
from typing import Any

import ray
from pydantic import BaseModel

from actors.messages import AgentSpec, AskRequest, Reply
from topologies import Channel, fan_in, fan_out

WRITERS = 3


class Contest(BaseModel):
    """What the contest returns."""

    drafts: list[str]
    winner: str
    cost_usd: Decimal
    ledger: dict[str, Decimal]
    """USD per agent, as the Ledger attributes it."""


async def tagline_contest(runtime: Any, product: str, run_id: str | None = None) -> Contest:
    """Run the contest on ``runtime`` (what ``cluster.init`` returned)."""
    run_id = run_id or f"contest-{uuid.uuid4().hex[:6]}"

    def agent(role: str, tier: str, system: str) -> Any:
        return runtime.spawn(AgentSpec(name=f"{run_id}/contest/{role}", role=role, tier=tier,
                                       system=system, run_id=run_id, topology="contest"))

    writers = [agent(f"writer-{i}", "haiku", "You write one short, vivid tagline.")
               for i in range(1, WRITERS + 1)]
    editor = agent("editor", "sonnet", "You are an editor. Reply with the best tagline only.")
    to_writers = [Channel(f"brief->writer-{i}", AskRequest, w.ask, reply_type=Reply)
                  for i, w in enumerate(writers, start=1)]
    to_editor = Channel("drafts->editor", AskRequest, editor.ask, reply_type=Reply)

    brief = AskRequest(prompt=f"Write a tagline for {product}.", max_tokens=100)
    drafts = [reply.text async for reply in fan_in(await fan_out(to_writers, brief))]
    listed = "\n".join(f"{i}. {d}" for i, d in enumerate(drafts, start=1))
    verdict = await to_editor.request(AskRequest(
        prompt=f"Pick the best tagline for {product}:\n{listed}", max_tokens=100))

    everyone = [*writers, editor]
    await asyncio.gather(*(a.flush.remote() for a in everyone))
    rollup = await runtime.ledger.rollup.remote(run_id, "agent")
    for handle in everyone:
        ray.kill(handle)
    return Contest(drafts=drafts, winner=verdict.text,
                   cost_usd=sum((r.cost_usd for r in rollup), Decimal(0)),
                   ledger={r.key.rsplit("/", 1)[1]: r.cost_usd for r in rollup})


def main() -> None:
    import cluster

    runtime = cluster.init()
    try:
        contest = asyncio.run(tagline_contest(runtime, " ".join(sys.argv[1:]) or "a bakery"))
    finally:
        cluster.shutdown()
    for i, draft in enumerate(contest.drafts, start=1):
        print(f"draft {i}: {draft}")
    print(f"winner: {contest.winner}\ncost: ${contest.cost_usd} {contest.ledger}")


if __name__ == "__main__":
    main()
