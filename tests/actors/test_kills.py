"""Kill -9 an Agent, the Ledger or the RateLimiter mid-run: the run finishes, nothing is lost
or counted twice, and the limit still holds.

The one loss the design allows (``docs/reliability.md`` §1): the API takes no idempotency key,
so an attempt in flight inside a killed Agent may have been billed although its record died with
the process. The Ledger may therefore trail the bill by at most the attempts in flight at the
kill, never lead it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError
from ray.util.state import list_actors

import cluster
from actors.messages import AgentSpec, AskRequest, Reply
from cluster.settings import Settings
from emulator import EmulatorConfig, Limits, run_emulator
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

CALLS, IN_FLIGHT = 40, 4


def _kill_9(handle: Any) -> None:
    """SIGKILL the process behind an actor handle (no clean shutdown, like an OOM kill)."""
    gcs = ray.get_runtime_context().gcs_address
    actor_id = handle._actor_id.hex()
    [state] = list_actors(address=gcs, filters=[("actor_id", "=", actor_id)], detail=True)
    os.kill(state.pid, signal.SIGKILL)


async def _run(agent: Any, kill: Any = None, after: int = 0) -> list[Reply]:
    """Ask CALLS questions, IN_FLIGHT at a time, re-asking a call whose agent died; kill the
    ``kill`` actor (if given) once ``after`` replies are in."""
    gate, replies, killed = asyncio.Semaphore(IN_FLIGHT), [], False

    async def one(i: int) -> None:
        nonlocal killed
        async with gate:
            for _ in range(50):
                try:
                    replies.append(await agent.ask.remote(
                        AskRequest(prompt=f"Question {i}", max_tokens=30)))
                    break
                except RayActorError:   # the agent was killed: ask its restarted self again
                    await asyncio.sleep(0.2)
            if kill is not None and len(replies) >= after and not killed:
                killed = True
                _kill_9(kill)

    await asyncio.gather(*(one(i) for i in range(CALLS)))
    assert killed or kill is None
    return replies


def test_killing_an_agent_loses_only_its_calls_in_flight(rig: Rig) -> None:
    with run_emulator(EmulatorConfig(latency_s=0.05)) as emu:
        agent, run_id = rig.agent("haiku", emulator=emu)
        replies = asyncio.run(_run(agent, kill=agent, after=10))
        ray.get(agent.flush.remote())
        stats = emu.stats()

    assert len(replies) == CALLS
    totals = rig.ledger_totals(run_id)
    tokens, _ = bill(stats)
    # A call can finish and be recorded while its reply dies with the agent: the driver asks
    # again, so the Ledger may hold up to IN_FLIGHT more calls than the driver counted.
    assert CALLS <= totals.calls <= CALLS + IN_FLIGHT and totals.errors == 0
    assert 0 <= stats["requests"] - totals.attempts <= IN_FLIGHT
    assert all(ledger_tokens(totals)[k] <= v for k, v in tokens.items())


def test_killing_the_ledger_loses_and_doubles_nothing(rig: Rig) -> None:
    with run_emulator(EmulatorConfig(latency_s=0.05)) as emu:
        agent, run_id = rig.agent("haiku", emulator=emu)
        replies = asyncio.run(_run(agent, kill=rig.runtime.ledger, after=10))
        ray.get(agent.flush.remote())
        stats = emu.stats()

    assert len(replies) == CALLS
    totals = rig.ledger_totals(run_id)
    tokens, usd = bill(stats)
    assert (totals.calls, totals.attempts) == (CALLS, stats["requests"])
    assert ledger_tokens(totals) == tokens and totals.cost_usd == usd


@pytest.mark.slow
def test_killing_the_limiter_keeps_the_limit(ray_session: None, tmp_path: Path) -> None:
    # Both sides cap concurrency at 4 while the driver pushes 8: any overshoot is a 429.
    config = EmulatorConfig(latency_s=0.05, limits=Limits(max_concurrency=4))
    with run_emulator(config) as emu:
        settings = Settings(anthropic_base_url=emu.base_url, max_concurrency=4,
                            data_dir=tmp_path, _env_file=None)
        runtime = cluster.init(settings=settings, namespace=f"kill-{uuid.uuid4().hex[:6]}")
        agents = [runtime.spawn(AgentSpec(name=f"kill/limiter/w-{i}", run_id="limiter-kill"))
                  for i in range(2)]

        async def both() -> list[list[Reply]]:
            return await asyncio.gather(_run(agents[0], kill=runtime.limiter, after=10),
                                        _run(agents[1]))

        replies = asyncio.run(both())
        stats = emu.stats()
        ray.get([a.flush.remote() for a in agents])
        totals = ray.get(runtime.ledger.totals.remote("limiter-kill"))

    assert sum(map(len, replies)) == 2 * CALLS
    assert stats["responses_by_status"].get("429", 0) == 0
    assert stats["peak_concurrency"] <= 4
    assert totals.attempts == stats["requests"] == 2 * CALLS
