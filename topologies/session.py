"""The session API, with the guide's names: ``create_session`` (alias ``init``), ``query``, ``run``.

A session is one architecture, one Ledger run (every query of the session adds to it, and its
budget caps them all) and the agents it spawned, stopped on ``close`` / ``async with`` exit.

A session runs on the runtime it is given (``cluster.init()`` returns one): ``topologies``
never starts Ray or imports ``cluster``; only ``cluster`` knows how to start a runtime.

Example (a misspelt name fails before anything starts):
    >>> create_session("reserch", runtime=None)
    Traceback (most recent call last):
    ...
    topologies.errors.UnknownArchitecture: unknown architecture 'reserch': choose one of ...

On a runtime (``examples/research_session.py`` runs this)::

    runtime = cluster.init()
    async with create_session("research", runtime=runtime) as session:
        result = await session.query("How do actor runtimes schedule work?")
        async for event in session.run("And on Ray?"):
            if event.kind == "text":
                print(event.text, end="")
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from actors.agent import Backend
from actors.errors import ConfigError
from actors.ledger_rollup import Rollup
from topologies.architecture import Architecture, get_architecture
from topologies.messages import Event, RunCompleted, RunStarted
from topologies.plugins import Plugin, PluginContext, PluginManager
from topologies.run_context import Crew, RunContext, unwrap

_DONE = object()


class SessionRuntime(Protocol):
    """What a session runs on: ``cluster.init()`` returns one (a ``cluster.Runtime``)."""

    @property
    def backend(self) -> Backend:
        """How agents reach the API, the RateLimiter and the Ledger."""
        ...

    @property
    def settings(self) -> Any:
        """The runtime's settings; a session reads ``data_dir`` from them."""
        ...


class Session:
    """One architecture's run: query it, stream it, then close it to stop its agents.

    Args:
        architecture: A configured :class:`Architecture`.
        runtime: What ``cluster.init`` returned (a :class:`SessionRuntime`).
        run_id: The Ledger run; a fresh ``<architecture>-<hex>`` by default.
        budget_usd: Cap on the whole session's spend; a call that could cross it is refused
            with ``BudgetExceeded`` before it is sent.
        tools: Python callables for agents, by agent key or role (``{"researcher": [search]}``).
    """

    def __init__(self, architecture: Architecture[Any, Any], runtime: SessionRuntime, *,
                 run_id: str | None = None, budget_usd: Decimal | float | str | None = None,
                 tools: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> None:
        self.architecture = architecture
        self.runtime = runtime
        self.run_id = run_id or f"{architecture.name}-{uuid.uuid4().hex[:8]}"
        self.budget_usd = _budget(budget_usd)
        self.plugin_context = PluginContext(run_id=self.run_id, architecture=architecture,
                                            backend=runtime.backend)
        """The session as its plugins see it (its ledger, limiter, backend and throttle)."""
        self.plugins = PluginManager(architecture.plugins, self.plugin_context)
        self._tools = tools
        self.crew: Crew | None = None

    def __repr__(self) -> str:
        return f"Session({self.architecture.name!r}, run_id={self.run_id!r})"

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Set the budget and fire ``on_session_start`` (once; ``query`` calls it for you)."""
        if self.crew is not None:
            return
        if self.budget_usd is not None:
            await self.plugin_context.ledger.set_budget.remote(self.run_id, self.budget_usd)
        await self.plugins.fire("on_session_start")
        # Plugins may have replaced the backend (retry policy): agents get the final one.
        self.crew = Crew(self.architecture, self.run_id, self.plugin_context.backend, self.plugins,
                         self._tools)

    async def query(self, task: Any) -> Any:
        """Run the architecture on ``task`` (a prompt, for most) and return its typed result.

        Raises:
            EmptyInputError: the prompt is empty (nothing is spawned).
            BudgetExceeded, CallFailed, TopologyError: the run failed.
        """
        async def discard(_: Event) -> None:
            return None

        return await self._execute(task, discard, stream_final=False)

    async def run(self, task: Any) -> AsyncIterator[Event]:
        """Run on ``task``, yielding progress events and the final agent's text as it streams.

        The last event is ``run_completed`` with the typed result. Leaving the loop early
        cancels the run (and its streaming call).
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        worker = asyncio.create_task(self._execute(task, queue.put, stream_final=True))
        worker.add_done_callback(lambda _: queue.put_nowait(_DONE))
        try:
            while (event := await queue.get()) is not _DONE:
                yield event
            await worker
        finally:
            if not worker.done():
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    async def ledger_rollup(self, by: str = "agent") -> list[Rollup]:
        """The Ledger's roll-up of this session's run (agents flushed first, so it is exact)."""
        if self.crew is not None:
            await self.crew.flush()
        return await self.plugin_context.ledger.rollup.remote(self.run_id, by)

    async def close(self) -> None:
        """Flush the agents' records, fire ``on_session_end`` and stop the agents."""
        if self.crew is None:
            return
        crew, self.crew = self.crew, None
        try:
            await crew.flush()
            self.plugin_context.agent_names.update(crew.names())
            await self.plugins.fire("on_session_end")
        finally:
            await crew.stop()

    async def _execute(self, task: Any, emit: Callable[[Event], Any],
                       stream_final: bool) -> Any:
        arch = self.architecture
        checked = arch.check_input(task)
        await self.start()
        assert self.crew is not None
        question = checked if isinstance(checked, str) else str(getattr(checked, "question", ""))
        run = RunContext(self.crew, emit, stream_final=stream_final,
                         variables={"question": question},
                         data_dir=Path(self.runtime.settings.data_dir),
                         throttle=self.plugin_context.throttle)
        await emit(RunStarted(run_id=self.run_id, architecture=arch.name))
        await self.plugins.fire("on_before_execute", checked)
        try:
            result = await arch.execute(checked, run)
        except Exception as exc:
            error = unwrap(exc)
            await self.plugins.fire("on_error", error, None)
            raise error from None
        await self.crew.flush()
        self.plugin_context.agent_names.update(self.crew.names())
        await self.plugins.fire("on_after_execute", result)
        await emit(RunCompleted(result=result))
        return result


def create_session(architecture: str | type[Architecture[Any, Any]] | Architecture[Any, Any],
                   *, model: str | None = None, config: Any = None,
                   agent_configs: Mapping[str, Any] | None = None,
                   runtime: SessionRuntime, plugins: Sequence[Plugin] = (),
                   run_id: str | None = None, budget_usd: Decimal | float | str | None = None,
                   tools: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> Session:
    """Build a session for an architecture by name, class or instance (the guide's ``init``).

    Everything is checked here, before any agent is spawned: the name, the config's values,
    role counts, agent keys and models.

    Args:
        architecture: A registered name (``"research"``), an Architecture class or instance.
        runtime: What the session runs on: ``cluster.init()`` (or ``cluster.current()``).

    Example:
        >>> session = create_session("research", runtime=cluster.init(),   # doctest: +SKIP
        ...                          model="haiku", agent_configs={"lead": {"model": "sonnet"}})

    Raises:
        UnknownArchitecture: no architecture has that name.
        ConfigError: a config value, agent key, model or role count is wrong.
    """
    if isinstance(architecture, Architecture):
        if config is not None or model is not None or agent_configs:
            raise ConfigError("configure the architecture instance itself, or pass its name "
                              "with config=/model=/agent_configs=, not both")
        arch = architecture
        arch.plugins.extend(plugins)
    else:
        cls = get_architecture(architecture) if isinstance(architecture, str) else architecture
        arch = cls(config, model=model, agent_configs=agent_configs, plugins=plugins,
                   price_table=getattr(runtime.backend, "price_table", None))
    budget = _budget(budget_usd)
    return Session(arch, runtime, run_id=run_id, budget_usd=budget, tools=tools)


init = create_session
"""The guide's name for :func:`create_session`."""


def _budget(value: Decimal | float | str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        budget = Decimal(str(value))
    except ArithmeticError:
        raise ConfigError(f"budget_usd {value!r} is not a number of dollars") from None
    if not budget.is_finite() or budget <= 0:  # NaN would not even compare
        raise ConfigError(f"budget_usd must be more than 0, got {value!r}")
    return budget
