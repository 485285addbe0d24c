"""The guide's built-in plugins, backed by our actors instead of counters of their own.

- :class:`MetricsCollectorPlugin`: ``get_metrics()``; tokens, cost and calls from the Ledger.
- :class:`CostTrackerPlugin`: ``get_cost_summary()`` with the guide's keys, from the Ledger;
  an optional budget becomes the run's ``Ledger.set_budget`` (refused before the call).
- :class:`ThrottlePlugin`: ``max_concurrent`` / ``tokens_per_minute`` cap this session's calls,
  below the cluster's RateLimiter (which it never changes), until the session closes.
- :class:`RetryHandlerPlugin`: the retry policy the session's agents are spawned with.

Example:
    >>> cost = CostTrackerPlugin(budget_usd=2.00)
    >>> session.architecture.add_plugin(cost)                 # doctest: +SKIP
    >>> await session.query("...")                            # doctest: +SKIP
    >>> cost.get_cost_summary()["total_cost_usd"]             # doctest: +SKIP
    Decimal('0.0132')
"""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actors.retry_policy import RetryPolicy
from topologies.messages import ArchitectureResult, Finding
from topologies.plugins import Plugin, PluginContext
from topologies.throttle import SessionThrottle


class SessionMetrics(BaseModel):
    """What ``MetricsCollectorPlugin.get_metrics()`` returns (the guide's attribute names)."""

    model_config = ConfigDict(frozen=True)

    duration_ms: float = 0.0
    """Wall time of the last query's ``execute``."""
    agent_count: int = 0
    """Agents spawned by the session."""
    tool_call_count: int = 0
    """Tool calls the agents' models made."""
    agent_durations: dict[str, float] = Field(default_factory=dict)
    """Milliseconds each agent spent in calls, by agent key."""
    call_count: int = 0
    """Logical API calls (Ledger)."""
    error_count: int = 0
    """Failed attempts (Ledger)."""
    retry_count: int = 0
    """Retried attempts (Ledger)."""
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    estimated_cost_usd: Decimal = Decimal(0)
    """Exact cost of the session so far (Ledger)."""


class MetricsCollectorPlugin(Plugin):
    """Duration, agents, tool calls and time per agent; tokens and cost from the Ledger."""

    name = "metrics"

    def __init__(self) -> None:
        self._started = 0.0
        self._duration_ms = 0.0
        self._spawned: set[str] = set()
        self._tools = 0
        self._durations: dict[str, float] = {}
        self._ledger: Any = None

    def get_metrics(self) -> SessionMetrics:
        """The metrics as of the last finished query."""
        totals = self._ledger
        tokens = _tokens(totals) if totals is not None else (0, 0)
        return SessionMetrics(
            duration_ms=self._duration_ms, agent_count=len(self._spawned),
            tool_call_count=self._tools, agent_durations=dict(self._durations),
            call_count=getattr(totals, "calls", 0), error_count=getattr(totals, "errors", 0),
            retry_count=getattr(totals, "retries", 0), input_tokens=tokens[0],
            output_tokens=tokens[1], total_tokens=sum(tokens),
            estimated_cost_usd=getattr(totals, "cost_usd", Decimal(0)))

    async def on_before_execute(self, ctx: PluginContext, task: Any) -> None:
        self._started = time.monotonic()

    async def on_after_execute(self, ctx: PluginContext, result: ArchitectureResult) -> None:
        self._duration_ms = (time.monotonic() - self._started) * 1000
        self._ledger = await ctx.ledger.totals.remote(ctx.run_id)

    async def on_session_end(self, ctx: PluginContext) -> None:
        self._ledger = await ctx.ledger.totals.remote(ctx.run_id)

    async def on_agent_spawn(self, ctx: PluginContext, agent: str, spec: Any) -> None:
        self._spawned.add(agent)

    async def on_agent_complete(self, ctx: PluginContext, agent: str, finding: Finding) -> None:
        self._durations[agent] = self._durations.get(agent, 0.0) + finding.latency_s * 1000

    async def on_tool_call(self, ctx: PluginContext, agent: str, tool: str,
                           arguments: dict[str, Any]) -> None:
        self._tools += 1


class CostTrackerPlugin(Plugin):
    """Tokens and USD of the session per agent, read from the Ledger; optional budget.

    Args:
        budget_usd: Cap on the session's spend, enforced by the Ledger before each call.
    """

    name = "cost"

    def __init__(self, budget_usd: Decimal | float | str | None = None) -> None:
        self.budget_usd = None if budget_usd is None else Decimal(str(budget_usd))
        self._summary: dict[str, Any] = _empty_summary(self.budget_usd)

    def get_cost_summary(self) -> dict[str, Any]:
        """``total_tokens``, ``input_tokens``, ``output_tokens``, ``total_cost_usd``,
        ``agent_costs`` (USD by agent key), ``agent_tokens``, ``budget_usd``, ``remaining_usd``."""
        return dict(self._summary)

    async def on_session_start(self, ctx: PluginContext) -> None:
        if self.budget_usd is not None:
            await ctx.ledger.set_budget.remote(ctx.run_id, self.budget_usd)

    async def on_after_execute(self, ctx: PluginContext, result: ArchitectureResult) -> None:
        await self._refresh(ctx)

    async def on_session_end(self, ctx: PluginContext) -> None:
        await self._refresh(ctx)

    async def _refresh(self, ctx: PluginContext) -> None:
        totals = await ctx.ledger.totals.remote(ctx.run_id)
        per_agent = await ctx.ledger.rollup.remote(ctx.run_id, "agent")
        tokens = _tokens(totals)
        self._summary = {
            **_empty_summary(self.budget_usd),
            "total_tokens": sum(tokens), "input_tokens": tokens[0], "output_tokens": tokens[1],
            "total_cost_usd": totals.cost_usd,
            "agent_costs": {ctx.agent_key(r.key): r.cost_usd for r in per_agent},
            "agent_tokens": {ctx.agent_key(r.key): sum(_tokens(r)) for r in per_agent},
            "remaining_usd": (self.budget_usd - totals.cost_usd
                              if self.budget_usd is not None else None),
        }


class ThrottlePlugin(Plugin):
    """Cap this session's calls in flight and input tokens/minute, below the cluster's limits.

    The cap is the session's own (:class:`~topologies.throttle.SessionThrottle`): the
    cluster's RateLimiter and every other session keep their limits, and the cap goes when
    the session closes. It gates the calls made through ``RunContext.ask`` (every agent of
    every architecture); map-reduce's mapper hosts are called directly and are bounded by
    ``max_parallel_mappers`` instead.

    Args:
        max_concurrent: The session's calls in flight at once.
        tokens_per_minute: The session's estimated input tokens per minute.
        requests_per_minute: The session's calls started per minute (default: no own cap).
    """

    name = "throttle"

    def __init__(self, max_concurrent: int, tokens_per_minute: int,
                 requests_per_minute: int | None = None) -> None:
        self._limits = (max_concurrent, tokens_per_minute, requests_per_minute)
        # Built here too, so that bad values fail when the plugin is made, not mid-session.
        self.throttle = SessionThrottle(*self._limits)
        """The throttle of the last session started (one per session: none is shared)."""

    async def on_session_start(self, ctx: PluginContext) -> None:
        self.throttle = ctx.throttle = SessionThrottle(*self._limits)

    async def on_session_end(self, ctx: PluginContext) -> None:
        ctx.throttle = None


class RetryHandlerPlugin(Plugin):
    """The retry policy of the session's agents (add it before the first query).

    Args:
        max_retries: Retries after the first attempt of a call.
        initial_delay_s: First backoff when the API gives no ``retry-after``.
        max_delay_s: Cap of the exponential backoff.
    """

    name = "retry"

    def __init__(self, max_retries: int = 3, initial_delay_s: float = 0.5,
                 max_delay_s: float = 8.0) -> None:
        self.policy = RetryPolicy(max_retries=max_retries, initial_delay_s=initial_delay_s,
                                  max_delay_s=max_delay_s)

    async def on_session_start(self, ctx: PluginContext) -> None:
        ctx.backend = replace(ctx.backend, retry=self.policy)


def _tokens(rollup: Any) -> tuple[int, int]:
    """(every input token, output tokens) of a roll-up."""
    inputs = (rollup.input_tokens + rollup.cache_write_5m + rollup.cache_write_1h
              + rollup.cache_read)
    return inputs, rollup.output_tokens


def _empty_summary(budget: Decimal | None) -> dict[str, Any]:
    return {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
            "total_cost_usd": Decimal(0), "agent_costs": {}, "agent_tokens": {},
            "budget_usd": budget, "remaining_usd": budget}
