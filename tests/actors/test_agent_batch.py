"""Many asks per Ray call (``AskBatcher`` -> ``Agent.ask_batch``): fewer Ray calls, the same
replies, errors kept to their own request, and the same bill."""

from __future__ import annotations

import asyncio
from typing import Any

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


def _trickle(agent: Any, fast_calls: bool) -> tuple[list[Any], int]:
    """Two asks, then (with that batch on the host) four more one per millisecond, never two
    in one turn of the loop; returns the replies and the Ray calls made. With ``fast_calls``
    the batcher has seen this agent answer in milliseconds (a CPU-bound host, as in the
    throughput case of ``benchmarks/overhead.py``); else it has seen it take the API's 0.3 s."""

    async def main() -> tuple[list[Any], int]:
        batcher = AskBatcher(agent)
        if fast_calls:
            for _ in range(3):
                batcher.pace.saw(0.005)
        else:  # one real round trip first: the batcher learns the API's pace
            await batcher.ask(AskRequest(prompt="warm-up", max_tokens=20))
        calls = batcher.calls
        asks = [asyncio.ensure_future(batcher.ask(AskRequest(prompt=f"first {i}",
                                                             max_tokens=20)))
                for i in range(2)]
        await asyncio.sleep(0.05)  # that batch is on the host now
        for i in range(4):
            asks.append(asyncio.ensure_future(batcher.ask(AskRequest(prompt=f"then {i}",
                                                                     max_tokens=20))))
            await asyncio.sleep(0.001)
        return await asyncio.gather(*asks), batcher.calls - calls

    return asyncio.run(main())


def test_asks_made_one_by_one_to_a_cpu_bound_host_leave_together(rig: Rig) -> None:
    """While calls are fast, a busy host's asks wait a moment for company: each freed slot's
    ask sent alone would settle into one ask per Ray call."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)
        replies, calls = _trickle(agent, fast_calls=True)

    assert all(r.text for r in replies)
    assert calls == 2


def test_asks_to_a_host_waiting_on_a_slow_api_do_not_wait_for_company(rig: Rig) -> None:
    """An API taking 0.3 s leaves the host idle: an ask held 20 ms for company would only be
    20 ms late (the map phase's wall time, ``docs/performance.md``). Pins the adaptive hold:
    the old batcher sent these four in one call after them."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)
        replies, calls = _trickle(agent, fast_calls=False)

    assert all(r.text for r in replies)
    assert calls >= 4  # the first two together, then (nearly) each of the four on its own


def test_a_host_waiting_on_a_slow_api_streams_each_reply_as_it_finishes(rig: Rig) -> None:
    """Eight asks of one batch, answered by an API taking 0.3 s, finish within a few
    milliseconds of each other: the host no longer holds the first ones for the last (it
    sent all eight as one item), so replies reach the caller as they finish."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)

        async def main() -> list[list[Any]]:
            gen = agent.ask_batch.remote([AskRequest(prompt=f"q {i}", max_tokens=20)
                                          for i in range(8)])
            return [await ref async for ref in gen]

        items = asyncio.run(main())

    assert sorted(i for item in items for i, _ in item) == list(range(8))
    assert len(items) > 1


def test_a_cpu_bound_host_still_gets_many_asks_per_ray_call(rig: Rig) -> None:
    """At API latency 0 the CPU per call bounds the throughput: 200 asks, 50 in flight, go
    several to a Ray call (about ten in ``benchmarks/overhead.py``), not one each."""
    agent, _ = rig.agent("haiku")

    async def main() -> tuple[int, int]:
        batcher, gate = AskBatcher(agent), asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with gate:
                await batcher.ask(AskRequest(prompt=f"q {i}", max_tokens=20))

        await asyncio.gather(*(one(i) for i in range(200)))
        return batcher.calls, batcher.items

    calls, items = asyncio.run(main())
    assert calls <= 200 / 4 and items <= 200 / 3
