"""Warm Agent hosts: a run on a runtime that keeps them starts no actor of its own, and two runs
served by one host at once keep their Ledger attribution and their budgets apart.

The tests run in-process on the suite's Ray (hosts started as ``up`` starts them); the user's
view, a ``raytroupe run`` joining ``raytroupe up``, is in ``test_up.py`` (it shares that
module's ``up``)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import ray

import cluster
from actors.agent_host import _found, start_hosts
from actors.errors import BudgetExceeded
from cluster.settings import Settings
from topologies import create_session

TIGHT_USD = Decimal("0.0015")
"""Room for the lead's and the researchers' haiku calls, never for the synthesizer's
worst case (8,000 output tokens at $0.50/M = $0.004): that run must stop there."""


@pytest.fixture(scope="module")
def warm(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from emulator import run_emulator

    with run_emulator() as emu:
        settings = Settings(anthropic_base_url=emu.base_url,
                            data_dir=tmp_path_factory.mktemp("ledger"), _env_file=None)
        runtime = cluster.init(settings=settings, namespace=f"w-{uuid.uuid4().hex[:6]}")
        [host] = start_hosts(runtime.backend.namespace, tiers=("haiku",))
        try:
            yield runtime, host, emu
        finally:
            ray.kill(host, no_restart=True)  # detached: it would outlive the test run
            _found.clear()


async def _run(runtime: Any, budget: Decimal) -> tuple[str, Any]:
    session = create_session("research", runtime=runtime, model="haiku", budget_usd=budget,
                             config={"max_parallel_agents": 2},
                             agent_configs={"synthesizer": {"max_tokens": 8000}})
    try:
        async with session:
            return session.run_id, await session.query("How do actor runtimes schedule work?")
    except BudgetExceeded as exc:
        return session.run_id, exc


def _bill(base_url: str) -> Decimal:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url + "/_emulator/stats", timeout=10) as response:
        return Decimal(json.loads(response.read())["total_cost_usd"])


def test_two_runs_on_one_warm_host_keep_their_ledger_and_budgets_apart(warm: Any) -> None:
    runtime, host, emu = warm
    runs = asyncio.run(_gather(runtime))
    (tight_id, stopped), (free_id, result) = runs
    assert isinstance(stopped, BudgetExceeded), stopped
    assert result.output and len(result.findings) == len(result.subtopics) >= 1

    # Served by the warm host: both runs called it, and neither started an actor of its own.
    served = ray.get(host.stats.remote())["served"]
    assert served[tight_id] >= 2 and served[free_id] >= 4  # lead + researchers (+ synthesizer)
    for run_id in (tight_id, free_id):
        with pytest.raises(ValueError):
            ray.get_actor(f"{run_id}/research/lead", namespace=runtime.backend.namespace)
    assert ray.get(host.stats.remote())["agents"] == []  # closed sessions dropped theirs

    ledger = runtime.ledger
    tight, free = (ray.get(ledger.rollup.remote(r, "run"))[0] for r in (tight_id, free_id))
    assert Decimal(0) < tight.cost_usd <= TIGHT_USD  # it ran, and stopped before its cap
    assert free.cost_usd == result.cost_usd  # every call of the run, none of the other's
    for run_id in (tight_id, free_id):
        agents = [r.key for r in ray.get(ledger.rollup.remote(run_id, "agent"))]
        assert agents and all(a.startswith(f"{run_id}/research/") for a in agents)
    assert tight.cost_usd + free.cost_usd == _bill(emu.base_url)


def test_each_job_on_a_warm_host_draws_from_its_own_share_of_the_limit(warm: Any) -> None:
    # The RateLimiter's fair share is per Ray job: runs of two drivers served by one host
    # must hold a lease each, or the host's jobs would take one turn between them.
    import dataclasses

    from actors.messages import AgentSpec, AskRequest

    runtime, host, _ = warm
    names = []
    for job in ("0a000000", "0b000000"):
        backend = dataclasses.replace(runtime.backend, job=job)
        spec = AgentSpec(name=f"job-{job}/agent", tier="haiku", run_id=f"job-{job}")
        ray.get(host.ask.remote(spec, backend, AskRequest(prompt="Hi", max_tokens=5,
                                                          run_id=spec.run_id)))
        names.append(spec.name)
    assert ray.get(host.stats.remote())["jobs"] == ["0a000000", "0b000000"]
    ray.get(host.close.remote(names))
    assert ray.get(host.stats.remote())["jobs"] == []  # a job's lease goes with its last agent


def test_hosted_agents_are_asked_over_lanes_of_their_own(warm: Any) -> None:
    """A warm host's agents skip Ray's per-call cost too (``actors/lane_client.py``): one lane
    per agent, each bound to its agent, so the Ledger still names the agent that asked."""
    from actors import agent_handle
    from actors.agent_host import spawn
    from actors.messages import AgentSpec, AskRequest

    runtime, host, _ = warm
    run_id = f"lanes-{uuid.uuid4().hex[:6]}"
    agents = [spawn(AgentSpec(name=f"{run_id}/t/{role}", tier="haiku", run_id=run_id),
                    runtime.backend) for role in ("a", "b")]
    before = ray.get(host.__ray_call__.remote(lambda h: h._lanes.asks))

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(agent_handle.ask(
            a, AskRequest(prompt=f"Hi {i}", max_tokens=5, run_id=run_id))
            for i, a in enumerate(agents * 2))))

    replies = asyncio.run(main())

    assert [r.agent for r in replies] == [a.spec.name for a in agents * 2]
    assert ray.get(host.__ray_call__.remote(lambda h: h._lanes.asks)) - before == 4
    ray.get(host.flush.remote())
    rollup = ray.get(runtime.ledger.rollup.remote(run_id, "agent"))
    assert sorted((r.key, r.calls) for r in rollup) == [(a.spec.name, 2) for a in agents]
    ray.get(host.close.remote([a.spec.name for a in agents]))


async def _gather(runtime: Any) -> list[tuple[str, Any]]:
    return list(await asyncio.gather(_run(runtime, TIGHT_USD), _run(runtime, Decimal("1"))))
