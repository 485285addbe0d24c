"""Many asks per Ray call (``AskBatcher`` -> ``Agent.ask_batch``): fewer Ray calls, the same
replies, errors kept to their own request, and the same bill."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors.agent_batch import AskBatcher
from actors.errors import ConfigError
from actors.messages import AskRequest
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

ASKS = 12


def test_asks_of_one_moment_share_one_ray_call_and_are_billed_exactly(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku")

    async def main() -> tuple[list[object], int]:
        batcher = AskBatcher(agent)
        requests = [AskRequest(prompt=f"Question {i}", max_tokens=20) for i in range(ASKS)]
        requests[5] = AskRequest(prompt="too long an answer", max_tokens=10_000_000)
        replies = await asyncio.gather(*(batcher.ask(r) for r in requests),
                                       return_exceptions=True)
        return replies, batcher.calls

    replies, calls = asyncio.run(main())
    ray.get(agent.flush.remote())

    assert calls == 1
    assert isinstance(replies[5], ConfigError)  # its own error, as a plain ask raises it
    answered = [r for i, r in enumerate(replies) if i != 5]
    assert all(r.text and r.usage.output_tokens > 0 for r in answered)  # type: ignore[union-attr]
    assert len({r.call_ids for r in answered}) == ASKS - 1  # type: ignore[union-attr]
    tokens, usd = bill(rig.emulator.stats())
    totals = rig.ledger_totals(run_id)
    assert totals.calls == ASKS - 1 and ledger_tokens(totals) == tokens
    assert totals.cost_usd == usd


def test_a_lone_ask_is_a_plain_call_and_raises_its_own_error(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")

    async def main() -> int:
        batcher = AskBatcher(agent)
        with pytest.raises(ConfigError, match="max_tokens"):
            await batcher.ask(AskRequest(prompt="hi", max_tokens=10_000_000))
        reply = await batcher.ask(AskRequest(prompt="hi", max_tokens=20))
        assert reply.text
        return batcher.calls

    assert asyncio.run(main()) == 2


def test_asks_made_one_by_one_while_a_batch_is_in_flight_leave_together(rig: Rig) -> None:
    """A busy host's asks wait a moment for company: each freed slot's ask sent alone would
    settle into one ask per Ray call (the throughput case of ``benchmarks/overhead.py``)."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)

        async def main() -> tuple[list[object], int]:
            batcher = AskBatcher(agent)
            asks = [asyncio.ensure_future(batcher.ask(AskRequest(prompt=f"first {i}",
                                                                 max_tokens=20)))
                    for i in range(2)]
            await asyncio.sleep(0.05)  # that batch is on the host now
            for i in range(4):  # one ask per millisecond, never two in one turn of the loop
                asks.append(asyncio.ensure_future(batcher.ask(AskRequest(prompt=f"then {i}",
                                                                         max_tokens=20))))
                await asyncio.sleep(0.001)
            return await asyncio.gather(*asks), batcher.calls

        replies, calls = asyncio.run(main())

    assert all(r.text for r in replies)  # type: ignore[attr-defined]
    assert calls == 2
