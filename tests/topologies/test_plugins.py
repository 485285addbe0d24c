"""Plugins: hook order, and the built-ins backed by the Ledger, the RateLimiter and retries."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import pytest
import ray

from actors.errors import ConfigError, Overloaded
from emulator import ScriptedError
from tests.topologies.rig import Asked, TopologyRig
from topologies import (
    CostTrackerPlugin,
    MetricsCollectorPlugin,
    Plugin,
    RetryHandlerPlugin,
    ThrottlePlugin,
    create_session,
)

pytestmark = pytest.mark.asyncio


def _reflexion_answer(asked: Asked) -> str:
    return '{"success": true}' if "reflector" in asked.system else "done"


class Recorder(Plugin):
    """Writes down every hook it sees, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_session_start(self, ctx: Any) -> None:
        self.seen.append("session_start")

    async def on_before_execute(self, ctx: Any, task: Any) -> None:
        self.seen.append(f"before:{task}")

    async def on_agent_spawn(self, ctx: Any, agent: str, spec: Any) -> None:
        self.seen.append(f"spawn:{agent}:{spec.tier}")

    async def on_agent_complete(self, ctx: Any, agent: str, finding: Any) -> None:
        self.seen.append(f"complete:{agent}")

    async def on_after_execute(self, ctx: Any, result: Any) -> None:
        self.seen.append(f"after:{result.output}")

    async def on_error(self, ctx: Any, error: BaseException, agent: str | None) -> None:
        self.seen.append(f"error:{agent}:{type(error).__name__}")

    async def on_session_end(self, ctx: Any) -> None:
        self.seen.append("session_end")


async def test_hooks_fire_in_lifecycle_order(rig: TopologyRig) -> None:
    recorder = Recorder()
    with rig.script(_reflexion_answer):
        session = create_session("reflexion", runtime=rig.runtime)
        session.architecture.add_plugin(recorder)  # the guide's way, before the first query
        async with session:
            await session.query("task")
    assert recorder.seen == [
        "session_start", "before:task", "spawn:executor:haiku", "complete:executor",
        "spawn:reflector:sonnet", "complete:reflector", "after:done", "session_end"]


async def test_metrics_and_cost_read_the_ledger_and_equal_the_bill(rig: TopologyRig) -> None:
    metrics, cost = MetricsCollectorPlugin(), CostTrackerPlugin(budget_usd="1.50")
    with rig.script(_reflexion_answer):
        async with create_session("reflexion", runtime=rig.runtime,
                                  plugins=[metrics, cost]) as session:
            result = await session.query("task one")
            await session.query("task two")
            budget = await rig.runtime.ledger.budget.remote(session.run_id)
    bill = rig.emulator.stats()
    summary, m = cost.get_cost_summary(), metrics.get_metrics()

    assert summary["total_cost_usd"] == Decimal(bill["total_cost_usd"]) == m.estimated_cost_usd
    assert summary["total_cost_usd"] > result.cost_usd  # two queries, one session
    assert set(summary["agent_costs"]) == {"executor", "reflector"}
    assert sum(summary["agent_costs"].values()) == summary["total_cost_usd"]
    billed = sum(v["input_tokens"] + v["output_tokens"] for v in bill["billed"].values())
    assert summary["total_tokens"] == m.total_tokens == billed
    assert summary["remaining_usd"] == Decimal("1.50") - summary["total_cost_usd"]
    assert budget.cap_usd == Decimal("1.50")
    assert m.agent_count == 2 and m.call_count == 4 and m.tool_call_count == 0
    assert set(m.agent_durations) == {"executor", "reflector"} and m.duration_ms > 0


async def test_throttle_caps_its_own_session_and_no_other_nor_the_cluster(
        rig: TopologyRig) -> None:
    """Two pipelines at once: the throttled one runs one call at a time, the other all four;
    the cluster's RateLimiter limits are what they were before, during and after."""
    state = {"throttled": 0, "free": 0, "peak_throttled": 0, "peak_free": 0}

    async def answer(asked: Asked) -> str:
        side = "throttled" if "item t" in asked.user else "free"
        state[side] += 1  # the responder runs on the emulator's one event loop
        state[f"peak_{side}"] = max(state[f"peak_{side}"], state[side])
        try:
            await asyncio.sleep(0.1)
            return "ok"
        finally:
            state[side] -= 1

    def cluster_limits() -> dict[str, Any]:
        status = ray.get(rig.runtime.limiter.status.remote())
        return {b.key.tier: b.limits for b in status.buckets}

    before = cluster_limits()
    throttle = ThrottlePlugin(max_concurrent=1, tokens_per_minute=1_000_000)
    config = {"stages": ["only"], "max_items_in_flight": 4}
    with rig.script(answer):
        async with create_session("pipeline", runtime=rig.runtime, config=config,
                                  plugins=[throttle]) as throttled, \
                create_session("pipeline", runtime=rig.runtime, config=config) as free:
            await asyncio.gather(throttled.query([f"item t{i}" for i in range(4)]),
                                 free.query([f"item f{i}" for i in range(4)]))
            during = cluster_limits()
            assert throttled.plugin_context.throttle is throttle.throttle
            assert free.plugin_context.throttle is None
        assert throttled.plugin_context.throttle is None  # undone when the session closed

    assert state["peak_throttled"] == 1 and throttle.throttle.peak_in_flight == 1
    assert state["peak_free"] == 4
    assert during == cluster_limits() == before


async def test_throttle_refuses_limits_below_one() -> None:
    with pytest.raises(ConfigError, match="tokens_per_minute"):
        ThrottlePlugin(max_concurrent=2, tokens_per_minute=0)


async def test_the_retry_handler_sets_the_agents_retry_policy(rig: TopologyRig) -> None:
    def flaky_first_call() -> Any:
        calls = itertools.count()

        def answer(asked: Asked) -> str:
            if next(calls) == 0:
                raise ScriptedError("overloaded_error", headers={"retry-after-ms": "10"})
            return _reflexion_answer(asked)
        return answer

    recorder, metrics = Recorder(), MetricsCollectorPlugin()
    with rig.script(flaky_first_call()):
        async with create_session("reflexion", runtime=rig.runtime,
                                  plugins=[RetryHandlerPlugin(max_retries=0), recorder]) as s:
            with pytest.raises(Overloaded):
                await s.query("task")
    assert recorder.seen[-3:] == ["error:executor:Overloaded", "error:None:Overloaded",
                                  "session_end"]

    with rig.script(flaky_first_call()):
        async with create_session("reflexion", runtime=rig.runtime, plugins=[
                RetryHandlerPlugin(max_retries=2, initial_delay_s=0.01), metrics]) as s:
            result = await s.query("task")
    assert result.success and metrics.get_metrics().retry_count == 1


def find_sources(topic: str) -> str:
    """Find sources about a topic."""
    if topic == "boom":
        raise RuntimeError("index offline")
    return f"3 sources on {topic}"


class ToolWatcher(Plugin):
    """Keeps the tool hooks' arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.results: list[tuple[str, str, str, bool]] = []

    async def on_tool_call(self, ctx: Any, agent: str, tool: str, arguments: dict) -> None:
        self.calls.append((agent, tool, arguments))

    async def on_tool_result(self, ctx: Any, agent: str, tool: str, result: str,
                             is_error: bool) -> None:
        self.results.append((agent, tool, result, is_error))


async def test_tool_calls_inside_agents_reach_the_tool_hooks(rig: TopologyRig) -> None:
    def answer(asked: Asked) -> Any:
        if "lead researcher" in asked.system:
            return '{"subtopics": ["actors", "boom"]}'
        if "synthesizer" in asked.system:
            return "answer"
        if "3 sources" in asked.user or "index offline" in asked.user:
            return "finding from " + asked.user[-30:]
        topic = asked.user.split("\n")[0].removeprefix("Subtopic: ")
        return [{"type": "tool_use", "name": "find_sources", "input": {"topic": topic}}]

    watcher, metrics = ToolWatcher(), MetricsCollectorPlugin()
    with rig.script(answer) as script:
        async with create_session("research", config={"max_parallel_agents": 2},
                                  runtime=rig.runtime, plugins=[watcher, metrics],
                                  tools={"researcher": [find_sources]}) as session:
            result = await session.query("How do actors work?")

    assert all("Use your tools" in a.user for a in script.by("a researcher on a team")
               if a.user.startswith("Subtopic"))
    assert sorted((c[1], c[2]["topic"]) for c in watcher.calls) == [
        ("find_sources", "actors"), ("find_sources", "boom")]
    outcomes = {r[2]: r[3] for r in watcher.results}
    assert outcomes == {"3 sources on actors": False, "RuntimeError: index offline": True}
    assert {c[0] for c in watcher.calls} <= {"researcher_1", "researcher_2"}
    assert metrics.get_metrics().tool_call_count == 2 and result.output == "answer"
