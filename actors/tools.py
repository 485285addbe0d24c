"""Python callables as Anthropic tools, and running one model turn's tool calls concurrently.

A tool is a plain function (sync or async) with typed parameters and a docstring; its schema
comes from a pydantic model built from the signature, and the same model validates the model's
arguments before the function runs. A tool that raises, or gets arguments that fail validation,
returns an ``is_error`` result to the model instead of killing the agent; results are capped in
size and only ever go back as ``tool_result`` blocks (``docs/reliability.md`` §5).

An Agent runs its tools isolated (``Toolbox(..., isolated=True)``): each call is a Ray task of
its own (no CPU reserved, never retried), so a tool that crashes its process (``os._exit``,
a segfault, ``kill -9``, the OOM killer) or hangs past its time cap (the task is force-cancelled,
which kills its worker) comes back to the model as an ``is_error`` result while the Agent, its
event loop and its restarts are untouched (drill D19). The price is one task per tool call
(``docs/reliability.md`` §5 gives the figure); tools may use Ray inside (the task is a worker).

Example:
    >>> def add(a: int, b: int) -> int:
    ...     '''Add two integers.'''
    ...     return a + b
    >>> Tool.from_function(add).schema()["input_schema"]["required"]
    ['a', 'b']
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from pydantic import BaseModel, ValidationError, create_model
from ray.exceptions import RayError, RayTaskError

from actors.errors import ConfigError
from actors.messages import ToolUseBlock

MAX_RESULT_CHARS = 20_000
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Tool:
    """A callable the model may use, with the model that validates its arguments."""

    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[BaseModel]
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_function(cls, function: Callable[..., Any]) -> Tool:
        """Build a tool from a function's name, docstring and annotated parameters."""
        fields: dict[str, Any] = {}
        # eval_str: resolve string annotations (``from __future__ import annotations``).
        for name, param in inspect.signature(function, eval_str=True).parameters.items():
            if param.annotation is inspect.Parameter.empty:
                raise ConfigError(f"tool {function.__name__!r}: parameter {name!r} has no type "
                                  "annotation; the model needs a schema")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[name] = (param.annotation, default)
        model = create_model(f"{function.__name__}_arguments", **fields)
        doc = inspect.getdoc(function) or function.__name__
        return cls(function.__name__, doc, function, model)

    def schema(self) -> dict[str, Any]:
        """The tool definition the Messages API takes."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": schema}

    async def run(self, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Validate the arguments and call the function here; return (result text, is_error).

        A tool gets ``timeout_s`` seconds; past that the model is told it timed out (a sync
        tool's thread cannot be killed and finishes in the background).
        """
        try:
            values = self._validated(arguments)
        except ValidationError as exc:
            return f"invalid arguments for {self.name}: {exc.errors(include_url=False)}", True
        try:
            result = await asyncio.wait_for(self._call(values), self.timeout_s)
        except TimeoutError:
            return f"{self.name} timed out after {self.timeout_s:g} s", True
        except Exception as exc:  # a tool's failure is the model's information, not our crash
            return f"{self.name} failed: {type(exc).__name__}: {exc}", True
        return _text(result), False

    async def run_isolated(self, arguments: dict[str, Any]) -> tuple[str, bool]:
        """``run``, in a Ray task of its own: a crash or a hang costs the tool, not the caller.

        Past ``timeout_s`` the task is force-cancelled (its worker process is killed, so a
        stuck sync tool stops too).
        """
        try:
            values = self._validated(arguments)
        except ValidationError as exc:
            return f"invalid arguments for {self.name}: {exc.errors(include_url=False)}", True
        ref = _isolated_call.remote(self.function, self.name, values)
        try:
            return await asyncio.wait_for(ref, self.timeout_s)  # type: ignore[arg-type]
        except TimeoutError:
            ray.cancel(ref, force=True)
            return f"{self.name} timed out after {self.timeout_s:g} s (stopped)", True
        except RayTaskError as exc:  # the task itself failed (its arguments did not load...)
            cause = exc.cause if exc.cause is not None else exc
            return f"{self.name} failed: {type(cause).__name__}", True
        except RayError as exc:  # its process died (os._exit, a signal, out of memory)
            return (f"{self.name} crashed: its process died ({type(exc).__name__}); "
                    "nothing it did was returned"), True

    def _validated(self, arguments: dict[str, Any]) -> dict[str, Any]:
        validated = self.arguments.model_validate(arguments)
        # Attributes, not model_dump(): a parameter typed as a model arrives as that model.
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    async def _call(self, values: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**values)
        # Sync tools may block (I/O, CPU): keep them off the actor's event loop. An async
        # callable that is not a coroutine function (a partial, an object) returns its
        # coroutine from the thread, and it is awaited here.
        result = await asyncio.to_thread(self.function, **values)
        return await result if inspect.isawaitable(result) else result


def _text(result: Any) -> str:
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return text[:MAX_RESULT_CHARS]


@ray.remote(num_cpus=0, max_retries=0)
def _isolated_call(function: Callable[..., Any], name: str,
                   values: dict[str, Any]) -> tuple[str, bool]:
    """One tool call in a Ray worker; never retried (a tool may have side effects)."""
    try:
        result = asyncio.run(_awaited(function, values))
    except Exception as exc:  # the model's information, as in ``Tool.run``
        return f"{name} failed: {type(exc).__name__}: {exc}", True
    return _text(result), False


async def _awaited(function: Callable[..., Any], values: dict[str, Any]) -> Any:
    result = function(**values)
    return await result if inspect.isawaitable(result) else result


class Toolbox:
    """The tools one agent may use (an allowlist: a name not in it is an error result).

    ``isolated``: run each call in a Ray task of its own (the Agent does; see the module).
    """

    def __init__(self, functions: Sequence[Callable[..., Any]] = (), *,
                 isolated: bool = False) -> None:
        self._tools = {t.name: t for t in map(Tool.from_function, functions)}
        self._isolated = isolated

    def __bool__(self) -> bool:
        return bool(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool's definition, for the request's ``tools``."""
        return [tool.schema() for tool in self._tools.values()]

    async def run_all(self, calls: Sequence[ToolUseBlock]) -> list[dict[str, Any]]:
        """Run every tool call of one model turn concurrently; return ``tool_result`` blocks."""
        results = await asyncio.gather(*(self._run_one(call) for call in calls))
        return [{"type": "tool_result", "tool_use_id": call.id, "content": text,
                 **({"is_error": True} if failed else {})}
                for call, (text, failed) in zip(calls, results, strict=True)]

    async def _run_one(self, call: ToolUseBlock) -> tuple[str, bool]:
        tool = self._tools.get(call.name)
        if tool is None:
            return f"unknown tool {call.name!r}; available: {', '.join(self._tools)}", True
        return await (tool.run_isolated if self._isolated else tool.run)(call.input)
