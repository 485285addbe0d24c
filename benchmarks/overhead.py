"""What the Agent pipeline costs over a bare ``AsyncAnthropic``: throughput and added latency.

Baselines and subject run in the same process tree, against the same emulator subprocess, and
all three use the SDK's aiohttp transport (``anthropic.DefaultAioHttpClient``), as the agents
do, so a ratio credits the pipeline and nothing else:

* throughput, emulator latency 0: ``--calls`` whole calls, ``--in-flight`` at a time, through
  (a) one bare ``AsyncAnthropic`` in this process (``sdk_calls_per_s``), (b) the plain asyncio
  script a user would write instead: that client behind an ``asyncio.Semaphore`` and an
  ``aiolimiter.AsyncLimiter`` (``plain_calls_per_s``), (c) ``--agents`` Agent actors, asked
  as topologies ask them (``actors/agent_batch.py``: over each agent's lane, a unix socket
  with no Ray call per ask, ``actors/lane_client.py``: ``calls_per_s``), the asks of each
  moment batched into one Ray call per agent (the path without a lane:
  ``ray_batched_calls_per_s``) and one Ray call per ask (``unbatched_calls_per_s``); each call:
  a limiter permit from the local lease, the HTTP call, the settle, the record in the local
  journal;
* latency, emulator latency 200 ms: p50 of ``--latency-calls`` calls, one at a time, through the
  bare SDK, an agent (over its lane, as topologies ask it), and a bare async Ray actor holding
  the same SDK client (what any actor call adds: Ray's round trip); ``added_latency_p50_ms`` is
  agent minus SDK, split into ``actor_added_p50_ms`` (bare actor minus SDK) and
  ``pipeline_added_p50_ms`` (agent minus bare actor: below 0 when the lane costs less than Ray's
  round trip). The three take turns in blocks of ``--latency-block`` calls, so that they share
  the box's load; the first call of each block is not counted (it follows seconds of idleness).
  After each turn, an empty call to the bare actor, first after 200 ms of idleness as every call
  above follows (``ray_ping_idle_p50_ms``), then back to back (``ray_ping_p50_ms``): the floor
  of Ray's round trip on this box, idle and warm (``docs/performance.md``).

Prints ONE JSON line: ``{"bench": "overhead", "calls_per_s", "sdk_calls_per_s",
"plain_calls_per_s", "ratio_vs_sdk", "ratio_vs_plain", "added_latency_p50_ms", ...}``. Goals
on 2 cores: both ratios >= 1.0 at 50 in flight (Ray lets the agents use both cores), added
latency p50 <= 2 ms.

Every path runs once per round, back to back, ``--rounds`` times; each figure is the median
round's, each ratio is taken within a round (so both sides saw the same load), and
``*_range`` gives the ratios' spread over the rounds: the box is shared and noisy.

Usage: ``python benchmarks/overhead.py [--calls 2000] [--in-flight 50] [--agents 2]
[--rounds 3] [--latency-calls 50] [--latency-block 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import anthropic
import ray
from aiolimiter import AsyncLimiter

import cluster
from actors.agent_batch import AskBatcher
from actors.messages import AgentSpec, AskRequest
from cluster.settings import Settings
from emulator import EmulatorProcess

PROMPT = "Summarise in one line why an actor model suits a fleet of LLM agents."
MAX_TOKENS = 32
LATENCY_S = 0.2  # the emulator's latency for the latency part


async def _timed(calls: int, in_flight: int,
                 one: Callable[[int], Awaitable[Any]]) -> tuple[float, list[float]]:
    """Run ``calls`` calls ``in_flight`` at a time; return (calls/s, per-call latencies)."""
    gate, latencies = asyncio.Semaphore(in_flight), []

    async def timed(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(calls)))
    return calls / (time.perf_counter() - started), latencies


def _client(base_url: str) -> anthropic.AsyncAnthropic:
    """The SDK client on the transport the agents use (``actors/agent.py``)."""
    return anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-bench", max_retries=0,
                                    http_client=anthropic.DefaultAioHttpClient())


async def _sdk(base_url: str, calls: int, in_flight: int,
               limiter: AsyncLimiter | None = None) -> tuple[float, list[float]]:
    """The bare SDK; with ``limiter``, the plain asyncio script (``_timed`` is its Semaphore)."""
    async with _client(base_url) as client:
        async def one(i: int) -> Any:
            if limiter is not None:
                async with limiter:
                    return await _create(client, i)
            return await _create(client, i)
        await _timed(min(calls, 50), in_flight, one)                    # warm-up
        return await _timed(calls, in_flight, one)


async def _create(client: anthropic.AsyncAnthropic, i: int) -> Any:
    return await client.messages.create(
        model="claude-haiku-5-5", max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": f"{PROMPT} ({i})"}])


def _plain_limiter() -> AsyncLimiter:
    """A requests/min limit far above the load, as a user would set one: it never binds."""
    return AsyncLimiter(10**7, 60)


async def _agents(agents: list[Any], calls: int, in_flight: int, batched: bool = True,
                  lane: bool = True) -> tuple[float, list[float]]:
    """Calls through the agents as topologies send them (over each agent's lane, or batched
    over Ray without it), or one Ray call each."""
    batchers = [AskBatcher(a, lane=lane) for a in agents]

    async def one(i: int) -> Any:
        request = AskRequest(prompt=f"{PROMPT} ({i})", max_tokens=MAX_TOKENS)
        if batched:
            return await batchers[i % len(agents)].ask(request)
        return await agents[i % len(agents)].ask.remote(request)
    await _timed(min(calls, 50), in_flight, one)                        # warm-up
    return await _timed(calls, in_flight, one)


def _spawn(base_url: str, count: int, tag: str) -> list[Any]:
    runtime = cluster.init(settings=Settings(
        anthropic_base_url=base_url, rpm=10**7, itpm=10**9, otpm=10**9, max_concurrency=10**4,
        data_dir=Path(tempfile.mkdtemp()), _env_file=None), namespace=f"bench-{tag}")
    agents = [runtime.spawn(AgentSpec(name=f"bench/{tag}/agent-{i}", run_id=f"bench-{tag}"))
              for i in range(count)]
    ray.get([a.flush.remote() for a in agents])
    return agents


@ray.remote(num_cpus=0)
class _BareActor:
    """A bare async Ray actor making the same SDK call: the latency any actor adds."""

    def __init__(self, base_url: str) -> None:
        self.client = _client(base_url)

    async def create(self, i: int) -> str:
        return (await _create(self.client, i)).content[0].text

    async def ping(self) -> None:
        """An empty call: Ray's round trip alone."""


async def _pings(actor: Any, count: int, idle_s: float) -> list[float]:
    """Ray's round trip alone, each ping after ``idle_s`` of idleness: 0 is back to back, the
    emulator's latency is what every call of the other paths follows (docs/performance.md)."""
    times = []
    for _ in range(count):
        await asyncio.sleep(idle_s)
        started = time.perf_counter()
        await actor.ping.remote()
        times.append(time.perf_counter() - started)
    return times


async def _latency(base_url: str, agent: Any, actor: Any,
                   args: argparse.Namespace) -> dict[str, float]:
    """One call at a time through the SDK, the agent and the bare actor, taking turns in
    blocks so that the three share the box's load (it drifts over a round on a shared box)."""
    lat: dict[str, list[float]] = {"sdk": [], "agent": [], "actor": []}
    pings: dict[str, list[float]] = {"idle": [], "warm": []}
    batcher = AskBatcher(agent)
    async with _client(base_url) as client:
        paths: dict[str, Callable[[int], Awaitable[Any]]] = {
            "sdk": lambda i: _create(client, i),
            "agent": lambda i: batcher.ask(
                AskRequest(prompt=f"{PROMPT} ({i})", max_tokens=MAX_TOKENS)),
            "actor": lambda i: actor.create.remote(i)}
        for one in paths.values():                                      # warm-up
            await _timed(10, 1, one)
        while len(lat["agent"]) < args.latency_calls:
            for name, one in paths.items():
                _, times = await _timed(args.latency_block + 1, 1, one)
                lat[name] += times[1:]  # the first follows the other paths' block: idle
            pings["idle"] += await _pings(actor, args.latency_block, LATENCY_S)
            pings["warm"] += await _pings(actor, args.latency_block, 0)
    sdk, agent_p50, actor_p50 = (statistics.median(lat[k]) * 1e3 for k in paths)
    return {"sdk_latency_p50_ms": sdk, "latency_p50_ms": agent_p50,
            "actor_latency_p50_ms": actor_p50, "added_latency_p50_ms": agent_p50 - sdk,
            "actor_added_p50_ms": actor_p50 - sdk, "pipeline_added_p50_ms": agent_p50 - actor_p50,
            "ray_ping_p50_ms": statistics.median(pings["warm"]) * 1e3,
            "ray_ping_idle_p50_ms": statistics.median(pings["idle"]) * 1e3}


async def _round(fast: str, slow: str, agents: list[Any], slow_agent: list[Any],
                 args: argparse.Namespace, bare_actor: Any = None) -> dict[str, float]:
    """One round of every path, back to back, so that a round's ratios share one load."""
    calls, in_flight = args.calls, args.in_flight
    sdk, _ = await _sdk(fast, calls, in_flight)
    plain, _ = await _sdk(fast, calls, in_flight, _plain_limiter())
    batched, _ = await _agents(agents, calls, in_flight)
    unbatched, _ = await _agents(agents, calls, in_flight, batched=False)
    ray_batched, _ = await _agents(agents, calls, in_flight, lane=False)
    latency = await _latency(slow, slow_agent[0], bare_actor, args)
    return {"calls_per_s": batched, "unbatched_calls_per_s": unbatched,
            "ray_batched_calls_per_s": ray_batched, "sdk_calls_per_s": sdk,
            "plain_calls_per_s": plain, "ratio_vs_sdk": batched / sdk,
            "ratio_vs_plain": batched / plain, **latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--latency-calls", type=int, default=50)
    parser.add_argument("--latency-block", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=300 * 1024 * 1024,
             log_to_driver=False)
    try:
        with EmulatorProcess(latency_s=0) as fast, EmulatorProcess(latency_s=LATENCY_S) as slow:
            agents = _spawn(fast.base_url, args.agents, "fast")
            slow_agent = _spawn(slow.base_url, 1, "slow")
            bare_actor = _BareActor.remote(slow.base_url)
            rounds = [asyncio.run(_round(fast.base_url, slow.base_url, agents, slow_agent, args,
                                         bare_actor)) for _ in range(args.rounds)]
    finally:
        ray.shutdown()
    report: dict[str, Any] = {"bench": "overhead", "calls": args.calls,
                              "in_flight": args.in_flight, "agents": args.agents,
                              "rounds": args.rounds}
    for key in rounds[0]:  # the median round of each figure; ratios are paired within a round
        values = sorted(r[key] for r in rounds)
        report[key] = round(statistics.median(values), 3 if key.startswith("ratio") else 2)
        if key.startswith("ratio"):
            report[f"{key}_range"] = [round(values[0], 3), round(values[-1], 3)]
    report["load_avg_1m"] = round(os.getloadavg()[0], 1)  # the box's load at the end
    print(json.dumps(report))


if __name__ == "__main__":
    main()
