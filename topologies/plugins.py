"""Lifecycle plugins: the guide's hooks, fired by the session and the run around every agent call.

A plugin subclasses :class:`Plugin` and overrides the hooks it needs (all async, all no-ops by
default). Each hook gets the :class:`PluginContext` first: the run id, the architecture, the
Ledger and RateLimiter handles, and the backend agents will be spawned with (a plugin may
replace it in ``on_session_start``, as ``RetryHandlerPlugin`` does).

    session start ─┬─ before execute ─┬─ agent spawn ─ tool call ─ tool result ─ agent complete ─┐
                   │                  └─ ... (per agent call) ── error (any failure) ────────────┤
                   └─ after execute (agents flushed: the Ledger is exact) ─ ... ─ session end ───┘

A hook's exception propagates: a plugin that cannot do its job (a bad budget) stops the run
with its error rather than letting it go on unwatched.

Example:
    >>> class Printer(Plugin):
    ...     async def on_agent_complete(self, ctx, agent, finding):
    ...         print(agent, finding.cost_usd)
    >>> session.architecture.add_plugin(Printer())  # doctest: +SKIP

The built-in plugins (metrics, cost, throttle, retry) live in :mod:`topologies.builtin_plugins`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.agent import Backend
from actors.messages import AgentSpec
from topologies.messages import ArchitectureResult, Finding
from topologies.throttle import SessionThrottle

if TYPE_CHECKING:
    from topologies.architecture import Architecture

HOOKS = ("on_session_start", "on_session_end", "on_before_execute", "on_after_execute",
         "on_agent_spawn", "on_agent_complete", "on_tool_call", "on_tool_result", "on_error")


@dataclass
class PluginContext:
    """One session as its plugins see it: the run, the architecture, the cluster's actors.

    It lives as long as the session (``Session.plugin_context``); each query's ``execute``
    gets a :class:`~topologies.run_context.RunContext` of its own, and each API call inside an
    Agent has a private call context of the Agent's.
    """

    run_id: str
    architecture: Architecture[Any, Any]
    backend: Backend
    """How agents reach the API; replaceable in ``on_session_start`` (before any spawn)."""
    throttle: SessionThrottle | None = None
    """This session's own cap below the cluster's limits (set by ``ThrottlePlugin``)."""
    agent_names: dict[str, str] = field(default_factory=dict)
    """Actor name of each agent spawned so far, by agent key."""

    @property
    def ledger(self) -> Any:
        """The Ledger actor: exact tokens and cost per agent, tier and run."""
        return self.backend.ledger

    @property
    def limiter(self) -> Any:
        """The cluster-wide RateLimiter actor."""
        return self.backend.limiter

    def agent_key(self, actor_name: str) -> str:
        """The agent key (``researcher_1``) of an actor name the Ledger reports."""
        for key, name in self.agent_names.items():
            if name == actor_name:
                return key
        return actor_name


class Plugin:
    """Base of every plugin: override the hooks you need."""

    name: str = "plugin"

    async def on_session_start(self, ctx: PluginContext) -> None:
        """Before anything is spawned for the session."""

    async def on_session_end(self, ctx: PluginContext) -> None:
        """After the session's agents were flushed, before they are stopped."""

    async def on_before_execute(self, ctx: PluginContext, task: Any) -> None:
        """Before one query's ``execute`` (``task`` is the checked input)."""

    async def on_after_execute(self, ctx: PluginContext, result: ArchitectureResult) -> None:
        """After one query succeeded and every agent flushed its records to the Ledger."""

    async def on_agent_spawn(self, ctx: PluginContext, agent: str, spec: AgentSpec) -> None:
        """An agent actor was created for ``agent`` (its key)."""

    async def on_agent_complete(self, ctx: PluginContext, agent: str, finding: Finding) -> None:
        """One call of ``agent`` returned."""

    async def on_tool_call(self, ctx: PluginContext, agent: str, tool: str,
                           arguments: dict[str, Any]) -> None:
        """``agent``'s model asked for ``tool`` (reported after its call returns)."""

    async def on_tool_result(self, ctx: PluginContext, agent: str, tool: str, result: str,
                             is_error: bool) -> None:
        """``tool`` returned ``result`` to ``agent``'s model."""

    async def on_error(self, ctx: PluginContext, error: BaseException,
                       agent: str | None) -> None:
        """A call or the run failed (``agent`` is None when not one agent's call)."""


class PluginManager:
    """Fires one hook on every plugin, in the order they were added."""

    def __init__(self, plugins: Sequence[Plugin], ctx: PluginContext) -> None:
        self.plugins, self.ctx = plugins, ctx

    async def fire(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on each plugin with the context and ``args``."""
        if hook not in HOOKS:
            raise ValueError(f"no plugin hook {hook!r}; hooks are {', '.join(HOOKS)}")
        for plugin in list(self.plugins):
            await getattr(plugin, hook)(self.ctx, *args)
