"""Many asks per Ray call (``AskBatcher`` -> ``Agent.ask_batch``, its path when the agent has no
lane: ``tests/actors/test_agent_lane.py``): fewer Ray calls, the same
replies, errors kept to their own request, and the same bill."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from actors import call_pace
from actors.agent_batch import AskBatcher
from actors.errors import ConfigError
from actors.messages import AskRequest
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

ASKS = 12


def test_asks_of_one_moment_share_one_ray_call_and_are_billed_exactly(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku")

    async def main() -> tuple[list[object], int]:
        batcher = AskBatcher(agent, lane=False)
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
        batcher = AskBatcher(agent, lane=False)
        with pytest.raises(ConfigError, match="max_tokens"):
            await batcher.ask(AskRequest(prompt="hi", max_tokens=10_000_000))
        reply = await batcher.ask(AskRequest(prompt="hi", max_tokens=20))
        assert reply.text
        return batcher.calls

    assert asyncio.run(main()) == 2


def _trickle(agent: Any, fast_calls: bool, every_s: float) -> tuple[list[Any], int]:
    """Two asks, then (with that batch on the host) four more, ``every_s`` apart; returns the
    replies and the Ray calls made for them. With ``fast_calls`` the batcher has seen this
    agent answer in milliseconds (a CPU-bound host, as in the throughput case of
    ``benchmarks/overhead.py``); else it has seen it take the API's 0.3 s."""

    async def main() -> tuple[list[Any], int]:
        batcher = AskBatcher(agent, lane=False)
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
            await asyncio.sleep(every_s)
        return await asyncio.gather(*asks), batcher.calls - calls

    return asyncio.run(main())


def test_asks_made_one_by_one_to_a_cpu_bound_host_leave_together(rig: Rig) -> None:
    """While calls are fast, a busy host's asks wait a moment for company: each freed slot's
    ask sent alone would settle into one ask per Ray call."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)
        replies, calls = _trickle(agent, fast_calls=True, every_s=0.001)

    assert all(r.text for r in replies)
    assert calls == 2


def test_asks_to_a_host_waiting_on_a_slow_api_wait_little_for_company(rig: Rig) -> None:
    """An API taking 0.3 s leaves the host idle: an ask waits for company 2 % of that (6 ms),
    not 20 ms (the map phase's wall time, ``docs/performance.md``). Asks 12 ms apart then
    leave one by one; the old batcher's 20 ms hold sent them two by two (3 calls here)."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.3) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)
        replies, calls = _trickle(agent, fast_calls=False, every_s=0.012)

    assert all(r.text for r in replies)
    assert calls >= 4  # the first two together, then (nearly) each of the four on its own


def _host_hold(agent: Any) -> float:
    """The hold the agent's host process now applies to a finished reply of a batch."""
    return ray.get(agent.__ray_call__.remote(lambda _: call_pace.HOSTED.hold_s))


def test_a_host_holds_replies_long_only_while_its_calls_are_fast(rig: Rig) -> None:
    """A host learns its API's pace from the replies it gives: answered in milliseconds
    (CPU-bound), it holds a finished reply up to 20 ms for the rest of its batch; waiting
    0.3 s on the API, at most 2 % of that."""
    from emulator import run_emulator

    def batch(agent: Any) -> None:
        async def main() -> None:
            gen = agent.ask_batch.remote([AskRequest(prompt=f"q {i}", max_tokens=20)
                                          for i in range(8)])
            async for ref in gen:
                await ref
        asyncio.run(main())

    fast, _ = rig.agent("haiku")
    for _ in range(6):  # a loaded box's first call (a new connection) can take a second:
        batch(fast)     # the average forgets it within a few batches of fast replies
        if _host_hold(fast) == call_pace.HOLD_S:
            break
    assert _host_hold(fast) == call_pace.HOLD_S
    with run_emulator(latency_s=0.3) as slow_api:
        slow, _ = rig.agent("haiku", emulator=slow_api)
        batch(slow)
        assert 0 < _host_hold(slow) < call_pace.HOLD_S / 2


def test_a_cpu_bound_host_still_gets_many_asks_per_ray_call(rig: Rig) -> None:
    """At API latency 0 the CPU per call bounds the throughput: 200 asks, 50 in flight, go
    several to a Ray call (about ten in ``benchmarks/overhead.py``), not one each."""
    agent, _ = rig.agent("haiku")

    async def main() -> tuple[int, int]:
        batcher, gate = AskBatcher(agent, lane=False), asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with gate:
                await batcher.ask(AskRequest(prompt=f"q {i}", max_tokens=20))

        await asyncio.gather(*(one(i) for i in range(200)))
        return batcher.calls, batcher.items

    calls, items = asyncio.run(main())
    assert calls <= 200 / 4 and items <= 200 / 3


def _first_call_work_left(agent: Any) -> list[str]:
    """Runs in the agent (``__ray_call__``): which of a first call's one-time costs are left."""
    left = [] if agent._post.direct else ["the SDK's first request"]
    left += [] if agent.lease._session is not None else ["the limiter lease's registration"]
    left += [] if agent.spec.run_id in agent._budgets._known else ["the run's budget"]
    return left


def test_a_warmed_agent_has_paid_its_first_calls_one_time_costs_without_calling(
        rig: Rig) -> None:
    rig.emulator.reset()
    agent, _ = rig.agent("haiku")
    assert len(ray.get(agent.__ray_call__.remote(_first_call_work_left))) == 3

    ray.get(agent.warm.remote())

    assert ray.get(agent.__ray_call__.remote(_first_call_work_left)) == []
    assert rig.emulator.received == []  # warming sent nothing to the API
    reply = ray.get(agent.ask.remote(AskRequest(prompt="hi", max_tokens=20)))
    assert reply.text and len(rig.emulator.received) == 1
