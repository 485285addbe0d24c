"""Who writes the replies: a deterministic default, or a function the user registers.

A responder gets the request body (a dict, as sent) and returns the reply's content: a ``str``
(one text block), a list of content blocks (``{"type": "text", "text": ...}`` or
``{"type": "tool_use", "name": ..., "input": {...}}``, ``id`` optional), or a
:class:`ResponderReply` that also sets the stop reason. It may be sync or async (it runs on the
emulator's event loop, so it must not block) and may raise :class:`ScriptedError` to make that
request fail with an API error. The emulator then applies ``stop_sequences`` and ``max_tokens``
to whatever it returns, exactly as it does to the default replies.

Example:
    >>> def shout(body):
    ...     return body["messages"][-1]["content"].upper()
    >>> def flaky(body):
    ...     raise ScriptedError("overloaded_error", "Overloaded")
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from emulator.default_reply import default_content
from emulator.validation import ApiError

__all__ = ["Reply", "Responder", "ResponderReply", "Responders", "ScriptedError"]

log = logging.getLogger("emulator")

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn",
                     "refusal"]


class ScriptedError(ApiError):
    """Raise inside a responder to answer that request with an API error (not billed).

    Args:
        error_type: The API's ``error.type``; the status follows from it (``overloaded_error``
            -> 529, ``rate_limit_error`` -> 429, ``api_error`` -> 500, ...).
        message: ``error.message``; defaults to a short text naming the type.
        status: Override the HTTP status.
        headers: Extra response headers (e.g. ``{"x-should-retry": "false"}``,
            ``{"retry-after": "1"}``).

    Example:
        >>> raise ScriptedError("overloaded_error")  # doctest: +SKIP
    """

    def __init__(self, error_type: str, message: str | None = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        default = "Overloaded" if error_type == "overloaded_error" else f"scripted {error_type}"
        super().__init__(error_type, message or default, status=status, headers=headers)


class ResponderReply(BaseModel):
    """A responder's full answer: content plus, optionally, the stop reason to report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str | list[dict[str, Any]]
    """A text, or content blocks (``text`` and ``tool_use``)."""
    stop_reason: StopReason | None = None
    """Forced stop reason; None derives it (``tool_use`` if a tool is called, else
    ``end_turn``; ``max_tokens`` / ``stop_sequence`` always win when they apply)."""


ResponderResult = str | list[dict[str, Any]] | ResponderReply
Responder = Callable[[dict[str, Any]], ResponderResult | Awaitable[ResponderResult]]
"""A function from the request body to the reply (sync or async)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A responder's answer normalised: content blocks with ids, and a forced stop reason."""

    content: list[dict[str, Any]]
    stop_reason: str | None = None


class Responders:
    """The responder in force: the user's if one is set, else the deterministic default."""

    def __init__(self) -> None:
        self._custom: Responder | None = None

    def set(self, responder: Responder | None) -> None:
        """Register ``responder`` (None restores the default)."""
        if responder is not None and not callable(responder):
            raise TypeError(f"a responder must be callable, got {type(responder).__name__}")
        self._custom = responder

    async def reply(self, body: dict[str, Any]) -> Reply:
        """Answer one request.

        Raises:
            ScriptedError: the responder scripted an API error.
            ApiError: the responder crashed or returned something unusable (500, not retried,
                with a message saying what was wrong).
        """
        if self._custom is None:
            return Reply(_with_tool_ids(default_content(body), body))
        try:
            result = self._custom(body)
            if inspect.isawaitable(result):
                result = await result
        except ApiError:
            raise
        except Exception as exc:
            log.exception("emulator responder raised")
            raise _responder_bug(f"raised {type(exc).__name__}: {exc}") from exc
        return _normalise(result, body)


def _normalise(result: object, body: dict[str, Any]) -> Reply:
    stop_reason = None
    if isinstance(result, ResponderReply):
        result, stop_reason = result.content, result.stop_reason
    if isinstance(result, str):
        return Reply([{"type": "text", "text": result}], stop_reason)
    if not isinstance(result, list):
        raise _responder_bug(f"returned {type(result).__name__}; expected str, a list of "
                             "content blocks or ResponderReply")
    for i, block in enumerate(result):
        _check_block(i, block)
    return Reply(_with_tool_ids(result, body), stop_reason)


def _check_block(i: int, block: object) -> None:
    if not isinstance(block, dict):
        raise _responder_bug(f"returned content[{i}] of type {type(block).__name__}; "
                             "expected a dict")
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return
    if kind == "tool_use" and isinstance(block.get("name"), str) \
            and isinstance(block.get("input", {}), dict):
        return
    raise _responder_bug(f"returned content[{i}] = {block!r}; expected a text block "
                         "({'type': 'text', 'text': str}) or a tool_use block "
                         "({'type': 'tool_use', 'name': str, 'input': dict})")


def _with_tool_ids(content: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    """Give every tool_use block an id (deterministic: replies are functions of requests)."""
    out = []
    for i, block in enumerate(content):
        if block.get("type") == "tool_use" and not block.get("id"):
            block = {**block, "id": _tool_id(body, i), "input": block.get("input", {})}
        out.append(block)
    return out


def _tool_id(body: dict[str, Any], index: int) -> str:
    last = json.dumps(body.get("messages", [])[-1:], sort_keys=True, default=str)
    seed = f"{len(body.get('messages', []))}:{index}:{last}"
    return "toolu_01" + hashlib.sha256(seed.encode()).hexdigest()[:22]


def _responder_bug(what: str) -> ApiError:
    # x-should-retry: false, because a retry would hit the same bug (the SDK honours it).
    return ApiError("api_error", f"emulator responder {what}",
                    headers={"x-should-retry": "false"})
