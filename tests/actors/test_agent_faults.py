"""Ledger == bill under injected faults: 529s, 500s, dropped connections, broken streams.

The emulator bills by a documented rule (``emulator/faults.py``): 529, 500 and dropped
connections are not billed; a stream broken by an error event is billed for its input and the
output tokens it sent. The Agent records every attempt, failed ones too, so the Ledger must
match that bill to the token and the cent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.errors import CallFailed
from actors.messages import AskRequest, Reply
from emulator import EmulatorConfig, Faults, run_emulator
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

FAULTS = Faults(overloaded=0.15, server_error=0.1, disconnect=0.1, stream_error=0.15)


async def _drive(agent: Any, calls: int) -> tuple[int, int]:
    """Half whole calls, half streams, concurrently; count successes and final failures."""

    async def whole(i: int) -> Reply | CallFailed:
        try:
            return await agent.ask.remote(AskRequest(prompt=f"Whole call {i}", max_tokens=60))
        except CallFailed as exc:
            return exc

    async def streamed(i: int) -> Reply | CallFailed:
        try:
            items = [await ref async for ref in
                     agent.stream.remote(AskRequest(prompt=f"Streamed call {i}", max_tokens=60))]
            return items[-1]
        except CallFailed as exc:
            return exc

    outcomes = await asyncio.gather(*(whole(i) if i % 2 else streamed(i) for i in range(calls)))
    return (sum(isinstance(o, Reply) for o in outcomes),
            sum(isinstance(o, CallFailed) for o in outcomes))


def test_the_ledger_equals_the_bill_under_faults(rig: Rig) -> None:
    with run_emulator(EmulatorConfig(faults=FAULTS, seed=7)) as faulty:
        agent, run_id = rig.agent("haiku", emulator=faulty)
        ok, failed = asyncio.run(_drive(agent, 60))
        ray.get(agent.flush.remote())
        stats = faulty.stats()

    assert ok > 30, "most calls succeed after retries"
    assert stats["server_errors"] > 0 and stats["disconnects"] > 0 and stats["stream_errors"] > 0
    totals = rig.ledger_totals(run_id)
    tokens, usd = bill(stats)
    assert ledger_tokens(totals) == tokens
    assert totals.cost_usd == usd
    assert totals.attempts == stats["requests"]
    assert totals.calls == ok + failed
