"""Agent fault drills (issue 12): what a caller and the Ledger see when an attempt, an Agent or
a tool dies, against the real SDK over HTTP to the emulator on 127.0.0.1, on a real Ray.

- D4 (a reply lost after the API billed it) and D5 (a client timeout): the attempt is in the
  Ledger at its reservation, flagged ``possibly_billed``, so the bill lies between the billed
  totals and the billed totals plus the possibly-billed ones; the reply says the same.
- D7 (``kill -9`` of an Agent): callers of ``actors.agent_handle`` (sessions, topologies, the
  ask batcher) never see a Ray error: calls in flight get ``AgentLost`` ("may have been
  billed"), calls made once the death is seen wait for the restart and succeed.
- D6 (a stream that fails after showing text): never replayed unless the caller opts in
  (``restart_on_error``); then it restarts from scratch after a ``StreamRestarted`` item, and
  the final error says which policy applied.
- D19 (a tool that kills its own process): the crash is an ``is_error`` tool result, the
  Agent is the same process, and every billed turn is in the Ledger.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import ray

import cluster
from actors import agent_handle
from actors.agent import spawn_agent
from actors.agent_batch import AskBatcher
from actors.errors import AgentLost, CallFailed, ConnectionFailed, Overloaded
from actors.messages import AgentSpec, AskRequest, Reply, StreamRestarted, TextDelta
from actors.retry_policy import RetryPolicy
from cluster.settings import Settings
from emulator import EmulatorConfig, Faults, run_emulator
from tests.actors.agent_fixtures import bill, ledger_tokens
from tests.actors.tool_fixtures import exit_process, kill_process
from tests.polling import wait_for

FAST_RETRY = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def runtime(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One runtime for the module; each drill points its agents at an emulator of its own."""
    with run_emulator() as emu:
        settings = Settings(anthropic_base_url=emu.base_url,
                            data_dir=tmp_path_factory.mktemp("faults"), _env_file=None)
        yield cluster.init(settings=settings, namespace=f"faults-{uuid.uuid4().hex[:6]}")


def _agent(runtime: Any, emu: Any, tools: tuple[Any, ...] = (), **backend: Any
           ) -> tuple[Any, str]:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    fields = {"retry": FAST_RETRY, **backend}
    handle = spawn_agent(AgentSpec(name=f"{run_id}/drill/worker", tier="haiku", run_id=run_id),
                         replace(runtime.backend, base_url=emu.base_url, **fields), tools)
    return handle, run_id


async def _asks(agent: Any, n: int, max_tokens: int = 60) -> list[Reply | BaseException]:
    async def one(i: int) -> Reply | BaseException:
        try:
            return await agent.ask.remote(AskRequest(prompt=f"Drill call {i}",
                                                     max_tokens=max_tokens))
        except Exception as exc:
            return exc

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_d4_d5_an_attempt_that_may_have_been_billed_is_recorded_at_its_reservation(
        runtime: Any) -> None:
    faults = Faults(lost_reply=0.25, slow=0.1, slow_s=0.6)
    with run_emulator(EmulatorConfig(faults=faults, seed=3)) as emu:
        agent, run_id = _agent(runtime, emu, timeout_s=0.3)  # a slow reply is a timeout
        outcomes = asyncio.run(_asks(agent, 40))
        ray.get(agent.flush.remote())
        stats = wait_for(lambda: (s := emu.stats())["in_flight"] == 0 and s,
                         "the timed-out replies to finish server-side (they are billed)")

    replies = [o for o in outcomes if isinstance(o, Reply)]
    assert len(replies) > 30 and stats["lost_replies"] > 0
    assert not [o for o in outcomes if not isinstance(o, Reply | CallFailed)]
    totals = ray.get(runtime.ledger.totals.remote(run_id))
    tokens, usd = bill(stats)
    assert totals.possibly_billed > stats["lost_replies"]  # and the timeouts
    # The bill lies between what surely was billed and that plus the possibly billed.
    assert ledger_tokens(totals)["input_tokens"] <= tokens["input_tokens"] <= \
        totals.input_tokens + totals.possibly_billed_input_tokens
    assert totals.output_tokens <= tokens["output_tokens"] <= \
        totals.output_tokens + totals.possibly_billed_output_tokens
    assert totals.cost_usd < usd <= totals.cost_usd + totals.possibly_billed_usd
    # What the callers were told adds up to the Ledger, the unsure part apart.
    failed = [o for o in outcomes if isinstance(o, CallFailed)]
    assert sum(r.possibly_billed for r in replies) + sum(e.possibly_billed for e in failed) \
        == totals.possibly_billed
    assert sum(r.cost_usd for r in replies) == totals.cost_usd
    assert sum(r.possibly_billed_usd for r in replies) <= totals.possibly_billed_usd


def test_d4_a_call_that_fails_for_a_lost_reply_says_it_may_have_been_billed(
        runtime: Any) -> None:
    with run_emulator(EmulatorConfig(faults=Faults(lost_reply=1.0))) as emu:
        agent, run_id = _agent(runtime, emu, retry=RetryPolicy(max_retries=1,
                                                               initial_delay_s=0.01))
        [error] = asyncio.run(_asks(agent, 1))
        ray.get(agent.flush.remote())
        assert emu.stats()["lost_replies"] == 2

    assert isinstance(error, ConnectionFailed) and error.possibly_billed == 2
    assert "may include 2 possibly-billed attempt(s)" in str(error)
    assert ray.get(runtime.ledger.totals.remote(run_id)).possibly_billed == 2


def _pid(agent: Any) -> int:
    return ray.get(agent.__ray_call__.remote(lambda _self: os.getpid()))


def test_d7_kill_9_of_an_agent_is_our_error_for_calls_in_flight_and_a_wait_for_the_rest(
        runtime: Any) -> None:
    with run_emulator(EmulatorConfig(latency_s=1.0)) as emu:
        agent, _ = _agent(runtime, emu)
        pid = _pid(agent)

        async def drill() -> tuple[list[Any], list[Any]]:
            batcher = AskBatcher(agent)  # the mapper hosts' path: many asks per Ray call

            async def one(i: int) -> Any:
                request = AskRequest(prompt=f"D7 {i}")
                try:
                    if i % 2:
                        return await batcher.ask(request)
                    return await agent_handle.ask(agent, request, "d7")
                except Exception as exc:
                    return exc

            in_flight = [asyncio.create_task(one(i)) for i in range(8)]
            await asyncio.to_thread(wait_for, lambda: emu.stats()["in_flight"] == 8,
                                    "8 calls at the API")
            os.kill(pid, signal.SIGKILL)
            lost = await asyncio.gather(*in_flight)
            # The death is seen: these wait for the restart instead of failing.
            later = await asyncio.gather(*(one(i) for i in range(8, 16)))
            return lost, later

        lost, later = asyncio.run(drill())

    assert all(isinstance(o, AgentLost) and "may have been billed" in str(o) for o in lost), lost
    assert all(isinstance(o, Reply) for o in later), later
    assert _pid(agent) != pid  # answered by the restarted process


def test_d19_a_tool_that_kills_its_process_is_a_tool_error_and_the_agent_lives_on(
        runtime: Any) -> None:
    def responder(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and last and last[0].get("type") == "tool_result":
            return " | ".join(f"{b.get('is_error', False)}:{b['content']}" for b in last)
        return [{"type": "tool_use", "name": "exit_process", "input": {"code": 1}},
                {"type": "tool_use", "name": "kill_process",
                 "input": {"signal_number": int(signal.SIGKILL)}}]

    with run_emulator() as emu:
        emu.set_responder(responder)
        agent, run_id = _agent(runtime, emu, tools=(exit_process, kill_process))
        pid = _pid(agent)
        reply = ray.get(agent.ask.remote(AskRequest(prompt="Use both tools.")))
        ray.get(agent.flush.remote())
        stats = emu.stats()

    assert reply.calls == 2 and reply.stop_reason == "end_turn"
    assert "True:exit_process crashed: its process died" in reply.text
    assert "True:kill_process crashed: its process died" in reply.text
    assert _pid(agent) == pid  # the same Agent process: no restart spent
    totals = ray.get(runtime.ledger.totals.remote(run_id))
    assert totals.attempts == stats["requests"] == 2  # both billed turns are in the Ledger
    assert ledger_tokens(totals) == bill(stats)[0]


async def _streams(agent: Any, n: int, **request: Any) -> list[list[Any] | BaseException]:
    async def one(i: int) -> list[Any] | BaseException:
        items: list[Any] = []
        try:
            async for ref in agent.stream.remote(AskRequest(prompt=f"D6 stream {i}",
                                                            max_tokens=40, **request)):
                items.append(await ref)
        except CallFailed as exc:
            return exc
        return items

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_d6_a_stream_cut_after_text_restarts_only_when_asked_and_says_which(
        runtime: Any) -> None:
    with run_emulator(EmulatorConfig(faults=Faults(stream_error=0.4), seed=5)) as emu:
        agent, run_id = _agent(runtime, emu)
        restarted = asyncio.run(_streams(agent, 12, restart_on_error=True))
        kept = asyncio.run(_streams(agent, 12))
        ray.get(agent.flush.remote())
        stats = emu.stats()

    # Opted in: every stream ends with a reply; after each marker, the text starts again.
    assert all(isinstance(items, list) for items in restarted), restarted
    markers = 0
    for items in restarted:
        *deltas, reply = items  # type: ignore[misc]
        assert isinstance(reply, Reply)
        restarts = [i for i, item in enumerate(deltas) if isinstance(item, StreamRestarted)]
        markers += len(restarts)
        shown = deltas[restarts[-1] + 1:] if restarts else deltas
        assert "".join(d.text for d in shown if isinstance(d, TextDelta)) == reply.text
        assert reply.attempts == len(restarts) + 1
    assert markers > 0
    # Not opted in: a stream cut after its text fails, and the error says why and how.
    failed = [e for e in kept if isinstance(e, CallFailed)]
    assert failed and all(isinstance(e, Overloaded) for e in failed)
    assert all("not retried: text already delivered; set restart_on_error=True to restart"
               in str(e) for e in failed)
    # Every attempt, the cut ones too, is in the Ledger as billed.
    totals = ray.get(runtime.ledger.totals.remote(run_id))
    assert ledger_tokens(totals) == bill(stats)[0] and totals.attempts == stats["requests"]
