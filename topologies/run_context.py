"""What an architecture's ``execute`` works with: its agents, typed calls, events and result.

:class:`Crew` is a session's agents: one Agent actor per logical agent, named
``run/topology/role[-i]`` (the dashboard shows it, the Ledger attributes to it), spawned on
first use and reused by later queries of the session. :class:`RunContext` is one run of
``execute``: each agent call is one actor call to the agent's ``ask`` (or its stream, for the
final answer while ``session.run()`` listens), inside the session's throttle when it has one;
it emits ``agent_started`` / ``agent_completed`` events and fires the plugins' agent hooks.
Calls are not capped per agent here: what an architecture allows (``max_items_in_flight``,
``max_parallel_agents``) is what runs, under the cluster's RateLimiter.

Example (actor names, the one pure part):
    >>> actor_name("r1", "research", "researcher_2")
    'r1/research/researcher-2'
    >>> actor_name("r1", "research", "lead")
    'r1/research/lead'

Inside ``execute``::

    await run.phase("research", total=3)
    finding = await run.ask("researcher_1", "Ray's scheduler?", topic="ray")
    return run.result(ResearchResult, output=finding.text)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from actors import agent_handle
from actors.agent import Backend
from actors.agent_host import spawn, stop
from actors.errors import RaytroupeError
from actors.messages import AgentSpec, AskRequest, Reply, TextDelta, Usage
from actors.token_estimate import text_tokens
from topologies.messages import (
    AgentCompleted,
    AgentStarted,
    ArchitectureResult,
    Finding,
    PhaseStarted,
    TextChunk,
)
from topologies.tool_events import recorded, spawn_recorder

if TYPE_CHECKING:
    from topologies.architecture import Architecture
    from topologies.messages import Event
    from topologies.plugins import PluginManager
    from topologies.throttle import SessionThrottle

ResultT = TypeVar("ResultT", bound=ArchitectureResult)
EventSink = Callable[["Event"], Awaitable[None]]

def actor_name(run_id: str, topology: str, key: str) -> str:
    """``run/topology/role[-i]``: ``researcher_2`` -> ``r1/research/researcher-2``."""
    role, _, index = key.rpartition("_")
    readable = f"{role}-{index}" if role and index.isdigit() else key
    return f"{run_id}/{topology}/{readable}"


def unwrap(exc: BaseException) -> BaseException:
    """Our error inside Ray's ``RayTaskError`` wrapper, so callers see one clear line."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RaytroupeError) else exc


class Crew:
    """A session's agents: spawned on first use, flushed and stopped when the session closes.

    Args:
        architecture: Says each agent's role, tier and model.
        run_id: The Ledger run every call is attributed to.
        backend: How agents reach the API (a session may replace its retry policy).
        plugins: Fired on each spawn.
        tools: Callables given to agents, by agent key or role name.
    """

    def __init__(self, architecture: Architecture[Any, Any], run_id: str, backend: Backend,
                 plugins: PluginManager,
                 tools: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> None:
        self.architecture, self.run_id, self.backend = architecture, run_id, backend
        self.plugins, self.tools = plugins, dict(tools or {})
        self.handles: dict[str, Any] = {}
        self.recorder: Any = None
        """Collects tool calls made inside the agents (only when there are tools)."""

    def names(self) -> dict[str, str]:
        """Actor name of every agent spawned so far, by agent key."""
        return {key: actor_name(self.run_id, self.architecture.name, key) for key in self.handles}

    async def agent(self, key: str) -> Any:
        """The Agent actor of ``key``, spawned on first use (fires ``on_agent_spawn``)."""
        if key not in self.handles:
            arch = self.architecture
            role = arch.role_of(key)
            tier, model = arch.model_for(key)
            spec = AgentSpec(name=actor_name(self.run_id, arch.name, key), role=key, tier=tier,
                             model=model, run_id=self.run_id, topology=arch.name,
                             router="auto" if arch.routed(key) else None)
            self.handles[key] = spawn(spec, self.backend, self._tools_of(key, role.name))
            await self.plugins.fire("on_agent_spawn", key, spec)
        return self.handles[key]

    def has_tools(self, key: str) -> bool:
        """True when agent ``key`` (or its role) was given tools."""
        return bool(self.tools.get(key) or self.tools.get(self.architecture.role_of(key).name))

    async def report_tools(self) -> None:
        """Fire ``on_tool_call`` / ``on_tool_result`` for the tool calls made since last time."""
        if self.recorder is None:
            return
        for event in await self.recorder.drain.remote():
            if event.kind == "call":
                await self.plugins.fire("on_tool_call", event.agent, event.tool, event.arguments)
            else:
                await self.plugins.fire("on_tool_result", event.agent, event.tool, event.result,
                                        event.is_error)

    def _tools_of(self, key: str, role: str) -> list[Callable[..., Any]]:
        tools = self.tools.get(key) or self.tools.get(role) or ()
        if not tools:
            return []
        if self.recorder is None:
            self.recorder = spawn_recorder()
        return [recorded(tool, self.recorder, key) for tool in tools]

    async def flush(self) -> None:
        """Wait until every agent's Ledger records are acknowledged."""
        await asyncio.gather(*(h.flush.remote() for h in self.handles.values()))

    async def stop(self) -> None:
        """Flush, then stop every agent actor (they cost about 95 MB each).

        The run's own actors give back their limiter stock first (``Agent.retire``): killed
        with it, the stock would be missing from the cluster's buckets until the lease's TTL.
        A warm host's agent shares the host's lease, which stays for the next run.
        """
        try:
            await asyncio.gather(*(h.retire.remote() for h in self.handles.values()))
        finally:
            for handle in [*self.handles.values(), *([self.recorder] if self.recorder else [])]:
                stop(handle)  # a warm host's agent is dropped, an actor of the run killed
            self.handles.clear()
            self.recorder = None


class RunContext:
    """One run of an architecture: typed agent calls, progress events, and the result's totals.

    It lives for one ``execute`` (one query); what lasts the whole session, and what plugins
    see, is the session's :class:`~topologies.plugins.PluginContext`.

    Args:
        crew: The session's agents.
        emit: Where events go (the session's stream, or nowhere for ``query``).
        stream_final: Stream the final agent's text as :class:`TextChunk` events.
        variables: ``$variables`` every prompt of this run may use (``$question``...).
        data_dir: The runtime's data folder (map-reduce keeps its resume store there).
        throttle: The session's own cap on its calls, if a plugin set one.
    """

    def __init__(self, crew: Crew, emit: EventSink, *, stream_final: bool,
                 variables: Mapping[str, Any], data_dir: Path,
                 throttle: SessionThrottle | None = None) -> None:
        self.crew, self.emit, self.stream_final = crew, emit, stream_final
        self.data_dir, self.throttle = data_dir, throttle
        self.architecture = crew.architecture
        self.run_id = crew.run_id
        self.variables = dict(variables)
        self.usage, self.cost_usd = Usage(), Decimal(0)
        self.agents: list[str] = []
        self.started = time.monotonic()

    async def phase(self, name: str, detail: str = "", total: int | None = None) -> None:
        """Announce a phase; ``total`` is how many agent calls it will make, when known."""
        await self.emit(PhaseStarted(name=name, detail=detail, total=total))

    async def ask(self, key: str, prompt: str, *, topic: str = "", final: bool = False,
                  max_tokens: int | None = None, variables: Mapping[str, Any] | None = None,
                  history: Sequence[Any] = (),
                  on_first_text: Callable[[], None] | None = None) -> Finding:
        """Ask agent ``key`` (its role's system prompt filled from the run's variables).

        ``final=True`` marks the run's answer: streamed as ``text`` events under
        ``session.run()``. An architecture that only knows afterwards which reply is the
        answer (a draft the critic accepts) asks with ``final=False`` and calls
        :meth:`answer` with the one it keeps. ``on_first_text`` is called when a streamed
        answer's first text arrives (the model is generating: work the request should not
        compete with may start). Raises our error (``BudgetExceeded``,
        ``CallFailed``...) unwrapped from Ray's, after firing the plugins' ``on_error``.
        """
        arch = self.architecture
        role = arch.role_of(key)
        handle = await self.crew.agent(key)
        tier, _ = arch.model_for(key)
        system = arch.prompt(role.name, **{**self.variables, "agent": key, **(variables or {})})
        request = AskRequest(prompt=prompt, system=system, history=tuple(history),
                             max_tokens=arch.max_tokens_for(key, max_tokens),
                             run_id=self.run_id, role=key)
        await self.emit(AgentStarted(agent=key, role=role.name, tier=tier, topic=topic))
        try:
            async with self.throttled(request):
                if final and self.stream_final:
                    reply = await self._stream(key, handle, request, on_first_text)
                else:
                    reply = await agent_handle.ask(handle, request, key)
        except Exception as exc:
            error = unwrap(exc)
            await self.crew.report_tools()
            await self.crew.plugins.fire("on_error", error, key)
            raise error from None
        await self.crew.report_tools()
        return await self._completed(key, role.name, topic, reply)

    async def answer(self, finding: Finding) -> None:
        """Stream ``finding`` as the run's answer (one ``text`` event under ``session.run()``)."""
        if self.stream_final:
            await self.emit(TextChunk(agent=finding.agent, text=finding.text))

    def result(self, cls: type[ResultT], **fields: Any) -> ResultT:
        """Build the typed result with this run's id, totals, duration and agents."""
        return cls(architecture=self.architecture.name, run_id=self.run_id, usage=self.usage,
                   cost_usd=self.cost_usd, duration_s=time.monotonic() - self.started,
                   agents=tuple(self.agents), **fields)

    def throttled(self, request: AskRequest) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold the session's throttle around one call (a no-op without one).

        :meth:`ask` does it for every agent call; an architecture that calls actors of its
        own (map-reduce's mapper hosts) wraps those calls in it to be throttled too.
        """
        if self.throttle is None:
            return contextlib.nullcontext()
        turns = sum(text_tokens(str(turn)) for turn in request.history)
        return self.throttle.hold(text_tokens(request.system or "") + text_tokens(request.prompt)
                                  + turns)

    async def _stream(self, key: str, handle: Any, request: AskRequest,
                      on_first_text: Callable[[], None] | None = None) -> Reply:
        reply: Reply | None = None
        # agent_handle.stream cancels the generator if we stop early (a dropped one keeps the
        # model, and its bill, running) and turns the agent's death into our own error.
        async for item in agent_handle.stream(handle, request, key):
            if isinstance(item, TextDelta):
                if on_first_text is not None:
                    on_first_text()
                    on_first_text = None
                await self.emit(TextChunk(agent=key, text=item.text))
            elif isinstance(item, Reply):
                reply = item
        assert reply is not None, "Agent.stream ends with a Reply"
        return reply

    async def _completed(self, key: str, role: str, topic: str, reply: Reply) -> Finding:
        self.usage += reply.usage
        self.cost_usd += reply.cost_usd
        if key not in self.agents:
            self.agents.append(key)
        finding = Finding(agent=key, topic=topic, text=reply.text, tier=reply.tier,
                          usage=reply.usage, cost_usd=reply.cost_usd, latency_s=reply.latency_s)
        await self.emit(AgentCompleted(
            agent=key, role=role, tier=reply.tier, topic=topic,
            input_tokens=reply.usage.total_input_tokens,
            output_tokens=reply.usage.output_tokens, cost_usd=reply.cost_usd,
            latency_s=reply.latency_s))
        await self.crew.plugins.fire("on_agent_complete", key, finding)
        return finding
