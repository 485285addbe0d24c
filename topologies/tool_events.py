"""Tool calls made inside agent actors, reported back to the session's plugins.

Tools run in the Agent's process, where the driver's plugins cannot see them. Each tool given
to a session's agents is wrapped: the wrapper awaits one small :class:`ToolRecorder` actor
before and after the real function (about 1 ms each), so by the time an ``ask`` returns, its
tool calls are recorded, and the run drains them into ``on_tool_call`` / ``on_tool_result``.
The recorder exists only for sessions that have tools.

Example (the wrapped tool keeps its name and signature, so the model sees the same tool; in a
session the recorder is the actor :func:`spawn_recorder` makes):
    >>> def search(query: str, limit: int = 3) -> str:
    ...     'Search the corpus.'
    ...     return query
    >>> wrapped = recorded(search, recorder=None, agent="researcher_1")
    >>> wrapped.__name__, wrapped.__doc__, list(inspect.signature(wrapped).parameters)
    ('search', 'Search the corpus.', ['query', 'limit'])
    >>> recorder = ToolRecorder()
    >>> asyncio.run(recorder.record(ToolEvent(kind="call", agent="researcher_1", tool="search")))
    >>> [(e.agent, e.tool) for e in asyncio.run(recorder.drain())], asyncio.run(recorder.drain())
    ([('researcher_1', 'search')], [])
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict


class ToolEvent(BaseModel):
    """One tool call or its result."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["call", "result"]
    agent: str
    tool: str
    arguments: dict[str, Any] = {}
    result: str = ""
    is_error: bool = False


class ToolRecorder:
    """Keeps tool events until the session drains them (an actor: see :func:`spawn_recorder`)."""

    def __init__(self) -> None:
        self.events: list[ToolEvent] = []

    async def record(self, event: ToolEvent) -> None:
        """Keep one event."""
        self.events.append(event)

    async def drain(self) -> list[ToolEvent]:
        """Every event since the last drain, in arrival order."""
        events, self.events = self.events, []
        return events


def spawn_recorder() -> Any:
    """A recorder actor for one session (no CPU reserved: it only appends to a list)."""
    return ray.remote(ToolRecorder).options(num_cpus=0).remote()


def recorded(tool: Callable[..., Any], recorder: Any, agent: str) -> Callable[..., Any]:
    """``tool`` with the same name, docstring and signature, reporting each call to ``recorder``.

    The Agent builds the tool's schema from the signature, so the model sees the same tool.
    """
    @functools.wraps(tool)
    async def wrapper(**arguments: Any) -> Any:
        await recorder.record.remote(ToolEvent(kind="call", agent=agent, tool=tool.__name__,
                                               arguments=arguments))
        try:
            if inspect.iscoroutinefunction(tool):
                result = await tool(**arguments)
            else:
                result = await asyncio.to_thread(tool, **arguments)
        except Exception as exc:
            await recorder.record.remote(ToolEvent(
                kind="result", agent=agent, tool=tool.__name__, is_error=True,
                result=f"{type(exc).__name__}: {exc}"))
            raise
        await recorder.record.remote(ToolEvent(kind="result", agent=agent, tool=tool.__name__,
                                               result=str(result)[:2_000]))
        return result

    wrapper.__signature__ = inspect.signature(tool)  # type: ignore[attr-defined]
    return wrapper
