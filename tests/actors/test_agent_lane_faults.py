"""The direct lane (``actors/lane_client.py``, ``actors/lane_server.py``) under what a fleet's
callers do: several event loops in one process asking the same agent, and peers that are not
lane callers."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.state import list_actors

from actors import agent_handle, lane_client, lane_wire
from actors.agent_batch import AskBatcher
from actors.messages import AskRequest
from tests.actors.agent_fixtures import Rig
from tests.fake_clock import FakeClock
from tests.polling import wait_for, wait_for_async


@pytest.fixture
def two_loops() -> Iterator[list[asyncio.AbstractEventLoop]]:
    """Two event loops, each running in a thread of its own (a threaded server's workers)."""
    loops = [asyncio.new_event_loop() for _ in range(2)]
    threads = [threading.Thread(target=loop.run_forever, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    yield loops
    for loop, thread in zip(loops, threads, strict=True):
        asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(5)  # as asyncio.run does
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _cancel_all() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_two_loops_asking_in_turn_keep_one_lane_each(rig: Rig,
                                                     two_loops: list[Any]) -> None:
    agent, _ = rig.agent("haiku")
    for i in range(4):
        for loop in two_loops:
            reply = asyncio.run_coroutine_threadsafe(
                agent_handle.ask(agent, AskRequest(prompt=f"q {i}", max_tokens=20)), loop
            ).result(30)
            assert reply.text

    connected = ray.get(agent.__ray_call__.remote(lambda a: len(a._lanes._connections)))
    assert connected == 2  # one lane per loop, not a new one (and a leaked one) per turn


def test_a_peer_without_the_token_cannot_make_the_host_wait_for_a_huge_first_frame(
        rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    address = ray.get(agent.open_lane.remote(ray.get_runtime_context().get_node_id()))

    async def hung_up_after_header() -> bytes:
        reader, writer = await asyncio.open_unix_connection(address.path)
        writer.write(lane_wire.HEADER.pack(lane_wire.MAX_FRAME, lane_wire.HELLO, 0))
        try:  # the host must not buffer (nor wait for) 64 MiB from an unauthenticated peer
            return await asyncio.wait_for(reader.read(), 2.0)
        finally:
            writer.close()

    assert asyncio.run(hung_up_after_header()) == b""


def test_an_ask_that_cannot_be_sent_leaves_nothing_for_settled_to_wait_for(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    lock = threading.Lock()  # not picklable: neither path can send this check

    async def main() -> float:
        batcher = AskBatcher(agent)
        await batcher.ask(AskRequest(prompt="warm-up", max_tokens=20))  # the lane is open
        with pytest.raises(TypeError, match="lock"):
            await batcher.ask(AskRequest(prompt="q", max_tokens=20,
                                         check=lambda text: lock.locked() or bool(text)))
        started = time.monotonic()
        await batcher.settled(5.0)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0  # nothing in flight: a run's flush does not wait 5 s


def _break_lanes_and_count_opens(agent: Any) -> None:
    """The host cannot listen (its lane directory is gone: a squatted or full ``/tmp``)."""
    lanes = agent._lanes
    lanes._directory = Path("/nonexistent/raytroupe-lanes")
    opened, agent.lane_opens = lanes.open, 0

    async def counted(caller_node: str) -> Any:
        agent.lane_opens += 1
        return await opened(caller_node)

    lanes.open = counted


def test_a_host_that_cannot_open_a_lane_is_not_asked_for_one_at_every_ask(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    ray.get(agent.__ray_call__.remote(_break_lanes_and_count_opens))

    async def main() -> list[Any]:
        return [await agent_handle.ask(agent, AskRequest(prompt=f"q {i}", max_tokens=20))
                for i in range(5)]

    assert all(reply.text for reply in asyncio.run(main()))  # over Ray's path
    opens = ray.get(agent.__ray_call__.remote(lambda a: a.lane_opens))
    assert opens == 1  # not one extra (failing) Ray call before every ask


def test_a_loop_closed_with_its_lane_open_leaves_no_error_behind(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = rig.agent("haiku")
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    loop = asyncio.new_event_loop()  # run_until_complete, then close: no task is cancelled
    assert loop.run_until_complete(agent_handle.ask(agent, AskRequest(prompt="q"))).text
    loop.close()
    assert asyncio.run(agent_handle.ask(agent, AskRequest(prompt="again"))).text
    del loop
    gc.collect()  # the closed loop's lane is forgotten, and its reader's task collected

    assert [f"{u.exc_type.__name__}: {u.exc_value}" for u in unraisable] == []


def _state(actor_id: str) -> str:
    return list_actors(address=ray.get_runtime_context().gcs_address,
                       filters=[("actor_id", "=", actor_id)])[0].state


def test_an_agent_whose_handles_are_all_dropped_stops_though_it_had_a_lane(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    actor_id = agent._actor_id.hex()

    async def main(handle: Any) -> Any:
        return await agent_handle.ask(handle, AskRequest(prompt="q", max_tokens=20))

    assert asyncio.run(main(agent)).text  # over the lane
    del agent  # as after a user's own spawn_agent: Ray stops an actor nobody holds
    gc.collect()

    wait_for(lambda: _state(actor_id) == "DEAD", "the agent, held by nobody, to stop",
             timeout_s=15, every_s=0.5)


async def _closed(lane: Any) -> bool:
    return lane.closed


def test_lanes_to_agents_stopped_long_ago_are_let_go(rig: Rig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(start=1_000.0)
    monkeypatch.setattr(lane_client, "_clock", clock)
    first, _ = rig.agent("haiku")
    second, _ = rig.agent("haiku")

    async def main() -> list[str]:  # a long-lived driver: a run, then another much later
        await agent_handle.ask(first, AskRequest(prompt="q", max_tokens=20))
        lane = await lane_client.lane_for(first, ConnectionError)
        ray.kill(first, no_restart=True)  # the end of a run: its agents stopped
        await wait_for_async(lambda: _closed(lane), "the stopped agent's lane to close")
        clock.advance(lane_client.FORGET_ENDED_S + 1)
        await agent_handle.ask(second, AskRequest(prompt="q", max_tokens=20))
        return [agent for agent, _loop in lane_client._LANES]

    kept = asyncio.run(main())
    assert first._actor_id.hex() not in kept  # not one lane kept per agent ever asked
    assert second._actor_id.hex() in kept
