"""A direct lane from a caller to an Agent actor on its node (``actors/lane_client.py``): the
same replies and bill as Ray's path without a Ray call per ask, a wrong token refused, a kill
-9 mid-batch lost as ``AgentLost`` and then a new lane, a cancel that stops the host's call, and
no socket file left behind."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors import agent_handle, lane_client, lane_wire
from actors.agent_batch import AskBatcher
from actors.errors import AgentLost, ConfigError
from actors.ledger_journal import JOURNAL_NAME, read_entries
from actors.messages import AskRequest
from emulator import run_emulator
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens
from tests.polling import wait_for, wait_for_async

ASKS = 12
_SAME = ("text", "content", "stop_reason", "agent", "tier", "model", "usage", "cost_usd",
         "calls", "attempts", "possibly_billed")


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


def _lane_files(agent: Any) -> list[Path]:
    """The lane socket files of this actor (any incarnation) on its node."""
    def files(agent: Any) -> list[str]:
        prefix = ray.get_runtime_context().get_actor_id()[:16]
        return [str(p) for p in agent._lanes._lane_dir().glob(f"{prefix}-*.sock")]
    return [Path(p) for p in ray.get(agent.__ray_call__.remote(files))]


def test_asks_over_the_lane_get_ray_paths_replies_and_the_exact_bill(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku")
    requests = [AskRequest(prompt=f"Question {i}", max_tokens=20) for i in range(ASKS)]
    requests[5] = AskRequest(prompt="too long an answer", max_tokens=10_000_000)

    async def main(lane: bool) -> tuple[list[Any], AskBatcher]:
        batcher = AskBatcher(agent, lane=lane)
        replies = await asyncio.gather(*(batcher.ask(r) for r in requests),
                                       return_exceptions=True)
        return replies, batcher

    over_lane, lane_batcher = asyncio.run(main(lane=True))
    over_ray, ray_batcher = asyncio.run(main(lane=False))
    ray.get(agent.flush.remote())

    assert lane_batcher.calls == 0 and lane_batcher.lane_asks == ASKS - 1  # no Ray call
    assert ray_batcher.calls == 1
    assert isinstance(over_lane[5], ConfigError) and str(over_lane[5]) == str(over_ray[5])
    for i, (a, b) in enumerate(zip(over_lane, over_ray, strict=True)):
        if i != 5:
            assert {f: getattr(a, f) for f in _SAME} == {f: getattr(b, f) for f in _SAME}
    tokens, usd = bill(rig.emulator.stats())
    totals = rig.ledger_totals(run_id)
    assert totals.calls == 2 * (ASKS - 1) and ledger_tokens(totals) == tokens
    assert totals.cost_usd == usd


def test_a_lane_refuses_a_caller_without_its_token_and_leaves_no_socket(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")

    address = ray.get(agent.open_lane.remote(_node()))
    assert Path(address.path).exists()
    assert Path(address.path).parent.stat().st_mode & 0o777 == 0o700

    async def main() -> tuple[int, int]:
        reader, writer = await asyncio.open_unix_connection(address.path)
        writer.write(lane_wire.frame(lane_wire.HELLO, 0, secrets.token_bytes(32)))
        refused, _, _ = await lane_wire.read_frame(reader)
        assert await reader.read() == b""  # and hung up
        writer.close()
        reader, writer = await asyncio.open_unix_connection(address.path)
        writer.write(lane_wire.frame(lane_wire.HELLO, 0, bytes.fromhex(
            address.token.get_secret_value())))
        welcome, _, _ = await lane_wire.read_frame(reader)
        writer.close()
        return refused, welcome

    refused, welcome = asyncio.run(main())

    assert (refused, welcome) == (lane_wire.REFUSED, lane_wire.WELCOME)
    assert _lane_files(agent) == []  # taken: nothing listens, the file is gone
    assert ray.get(agent.open_lane.remote("another-node")) is None  # Ray's path there


def _kill_9(agent: Any) -> None:
    os.kill(ray.get(agent.__ray_call__.remote(lambda _: os.getpid())), signal.SIGKILL)


def test_a_kill_mid_batch_loses_its_asks_and_the_next_ask_gets_a_new_lane(rig: Rig) -> None:
    with run_emulator(latency_s=1.0) as slow:
        agent, _ = rig.agent("haiku", emulator=slow)

        async def main() -> tuple[list[Any], Any, int]:
            batcher = AskBatcher(agent)
            await batcher.ask(AskRequest(prompt="warm-up", max_tokens=20))  # the lane is open
            asks = [asyncio.ensure_future(batcher.ask(AskRequest(prompt=f"q {i}",
                                                                 max_tokens=20)))
                    for i in range(5)]
            await asyncio.sleep(0.3)  # on the host, waiting on the API
            _kill_9(agent)
            lost = await asyncio.gather(*asks, return_exceptions=True)
            after = await batcher.ask(AskRequest(prompt="after", max_tokens=20))
            return lost, after, batcher.lane_asks

        lost, after, lane_asks = asyncio.run(main())

    assert all(isinstance(e, AgentLost) for e in lost), lost
    assert after.text and lane_asks == 2  # the warm-up, then a new lane after the restart
    assert _lane_files(agent) == []  # the dead incarnation's and the new one's


def test_an_ask_after_an_idle_lane_dropped_waits_for_the_restart(rig: Rig) -> None:
    """No ask was in flight when the host died: the next one is not lost, it waits for the
    restarted host (a new lane), as a call made once a death is seen does over Ray."""
    agent, _ = rig.agent("haiku")

    async def main() -> tuple[Any, int]:
        batcher = AskBatcher(agent)
        await batcher.ask(AskRequest(prompt="before", max_tokens=20))
        _kill_9(agent)
        await wait_for_async(lambda: _true(lane_client.dropped(agent)), "the lane to drop")
        after = await batcher.ask(AskRequest(prompt="after", max_tokens=20))
        return after, batcher.lane_asks

    after, lane_asks = asyncio.run(main())
    assert after.text and lane_asks == 2


async def _true(value: bool) -> bool:
    return value


def test_cancelling_an_ask_stops_the_hosts_call(rig: Rig) -> None:
    with run_emulator(latency_s=3.0) as slow:
        agent, run_id = rig.agent("haiku", emulator=slow)

        async def main() -> float:
            batcher = AskBatcher(agent)
            ask = asyncio.ensure_future(batcher.ask(AskRequest(prompt="q", max_tokens=20)))
            await wait_for_async(lambda: asyncio.to_thread(lambda: slow.stats()["in_flight"]),
                                 "the ask on the host, waiting on the API")
            started = time.monotonic()
            ask.cancel()
            await batcher.settled(10.0)  # the host says the call has ended
            return time.monotonic() - started

        took = asyncio.run(main())
        ray.get(agent.flush.remote())

    records = [e.record for e in read_entries(rig.runtime.settings.data_dir / JOURNAL_NAME,
                                              run_id)]
    assert [r.status for r in records] == ["cancelled"]
    assert took < 1.5  # not the API's 3 s: the call was cut, not left to finish


def test_agent_handle_ask_goes_over_the_lane(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")

    async def main() -> Any:
        reply = await agent_handle.ask(agent, AskRequest(prompt="hi", max_tokens=20))
        with pytest.raises(ConfigError, match="max_tokens"):
            await agent_handle.ask(agent, AskRequest(prompt="hi", max_tokens=10_000_000))
        return reply

    reply = asyncio.run(main())
    assert reply.text
    assert ray.get(agent.__ray_call__.remote(lambda a: a._lanes.asks)) == 2  # both, no Ray call


def _lane_when_up(agent: Any) -> Any:
    try:
        return ray.get(agent.open_lane.remote(_node()), timeout=5)
    except (RayActorError, GetTimeoutError):
        return None


def test_no_lane_socket_outlives_a_retired_or_killed_listener(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    unused = ray.get(agent.open_lane.remote(_node()))  # nobody connects: its listener waits
    assert Path(unused.path).exists()
    ray.get(agent.retire.remote())
    assert not Path(unused.path).exists()

    stale = ray.get(agent.open_lane.remote(_node()))
    _kill_9(agent)  # a dead process removes nothing: its next incarnation does
    fresh = wait_for(lambda: _lane_when_up(agent), "the restarted agent to open a lane")

    assert not Path(stale.path).exists() and Path(fresh.path).exists()
    assert _lane_files(agent) == [Path(fresh.path)]
