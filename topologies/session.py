"""The session API, with the seed's names: ``create_session`` (alias ``init``), ``query``, ``run``.

A session is one architecture, one Ledger run (every query of the session adds to it, and its
budget caps them all) and the agents it spawned, stopped on ``close`` / ``async with`` exit.

Example:
    >>> from topologies import create_session
    >>> async with create_session("research", config={"max_parallel_agents": 3}) as session:
    ...     result = await session.query("How do actor runtimes schedule work?")  # doctest: +SKIP
    ...     async for event in session.run("And on Ray?"):                       # doctest: +SKIP
    ...         if event.kind == "text":
    ...             print(event.text, end="")
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from actors.errors import ConfigError
from actors.ledger_rollup import Rollup
from topologies.architecture import Architecture, get_architecture
from topologies.messages import ArchitectureResult, Event, RunCompleted, RunStarted
from topologies.plugins import Plugin, PluginContext, PluginManager
from topologies.run_context import Crew, RunContext, unwrap

_DONE = object()


class Session:
    """One architecture's run: query it, stream it, then close it to stop its agents.

    Args:
        architecture: A configured :class:`Architecture`.
        runtime: What ``cluster.init`` returned (anything with ``backend`` and ``settings``).
        run_id: The Ledger run; a fresh ``<architecture>-<hex>`` by default.
        budget_usd: Cap on the whole session's spend; a call that could cross it is refused
            with ``BudgetExceeded`` before it is sent.
        tools: Python callables for agents, by agent key or role (``{"researcher": [search]}``).
    """

    def __init__(self, architecture: Architecture[Any, Any], runtime: Any, *,
                 run_id: str | None = None, budget_usd: Decimal | float | str | None = None,
                 tools: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> None:
        self.architecture = architecture
        self.runtime = runtime
        self.run_id = run_id or f"{architecture.name}-{uuid.uuid4().hex[:8]}"
        self.budget_usd = _budget(budget_usd)
        settings = getattr(runtime, "settings", None)
        self.ctx = PluginContext(run_id=self.run_id, architecture=architecture,
                                 backend=runtime.backend,
                                 default_limits=_default_limits(settings))
        self.plugins = PluginManager(architecture.plugins, self.ctx)
        self._tools = tools
        self.crew: Crew | None = None
        self.results: list[ArchitectureResult] = []

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
            await self.ctx.ledger.set_budget.remote(self.run_id, self.budget_usd)
        await self.plugins.fire("on_session_start")
        # Plugins may have replaced the backend (retry policy): agents get the final one.
        self.crew = Crew(self.architecture, self.run_id, self.ctx.backend, self.plugins,
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
        return await self.ctx.ledger.rollup.remote(self.run_id, by)

    async def close(self) -> None:
        """Flush the agents' records, fire ``on_session_end`` and stop the agents."""
        if self.crew is None:
            return
        crew, self.crew = self.crew, None
        try:
            await crew.flush()
            self.ctx.agent_names.update(crew.names())
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
                         variables={"question": question})
        await emit(RunStarted(run_id=self.run_id, architecture=arch.name))
        await self.plugins.fire("on_before_execute", checked)
        try:
            result = await arch.execute(checked, run)
        except Exception as exc:
            error = unwrap(exc)
            await self.plugins.fire("on_error", error, None)
            raise error from None
        await self.crew.flush()
        self.ctx.agent_names.update(self.crew.names())
        await self.plugins.fire("on_after_execute", result)
        self.results.append(result)
        await emit(RunCompleted(result=result))
        return result


def create_session(architecture: str | type[Architecture[Any, Any]] | Architecture[Any, Any],
                   *, model: str | None = None, config: Any = None,
                   agent_configs: Mapping[str, Any] | None = None,
                   plugins: Sequence[Plugin] = (), runtime: Any = None,
                   run_id: str | None = None, budget_usd: Decimal | float | str | None = None,
                   tools: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> Session:
    """Build a session for an architecture by name, class or instance (seed: ``init``).

    Everything is checked here, before Ray is touched: the name, the config's values, role
    counts, agent keys and models.

    Example:
        >>> session = create_session("research", model="haiku",            # doctest: +SKIP
        ...                          agent_configs={"lead": {"model": "sonnet"}})

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
        runtime = runtime or _default_runtime()
    else:
        # Resolve the name first: a typo should fail before Ray starts.
        cls = get_architecture(architecture) if isinstance(architecture, str) else architecture
        runtime = runtime or _default_runtime()
        arch = cls(config, model=model, agent_configs=agent_configs, plugins=plugins,
                   price_table=getattr(runtime.backend, "price_table", None))
    budget = _budget(budget_usd)
    return Session(arch, runtime, run_id=run_id, budget_usd=budget, tools=tools)


init = create_session
"""The seed's name for :func:`create_session`."""


def _default_runtime() -> Any:
    """The process's runtime, starting one offline if there is none (the seed's one-liner).

    Imported here, not at the top: ``topologies`` sits below ``cluster``, and only this
    convenience path reaches up to it.
    """
    import cluster

    try:
        return cluster.current()
    except RuntimeError:
        return cluster.init()


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


def _default_limits(settings: Any) -> Any:
    if settings is None:
        return None
    from actors.limits import TierLimits

    return TierLimits(rpm=settings.rpm, itpm=settings.itpm, otpm=settings.otpm,
                      max_concurrency=settings.max_concurrency)
