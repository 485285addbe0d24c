"""Automatic prompt caching: ``cache_control`` breakpoints on the prefixes calls share.

The API caches the exact prefix of a request (tools -> system -> messages) up to each block
marked ``cache_control``; a later request with the same prefix reads it at 0.1x the input price,
after a first write at 1.25x (``docs/messages-api.md`` §5). A prefix shorter than the model's
minimum cacheable length is processed uncached, and a request may carry at most 4 marks.

Which prefixes are shared is known here without guessing: an agent's tool definitions and its
system prompt are sent on every call (map-reduce mappers share one system prompt across every
chunk), and a conversation's earlier turns are resent on the next turn. So a mark goes at the
end of each of those three, in that order, when the prefix up to it is estimated to reach the
model's minimum (the estimate is generous: a mark on a prefix that turns out shorter is ignored
by the API, free of charge) and while marks are left. Marks the caller placed are kept and
counted; the new prompt itself is not marked (it is what changes between calls). The history
mark moves forward as a conversation grows; the next turn still reads the entry the previous
mark wrote, because the API looks back up to 20 block boundaries from each mark.

Example:
    >>> params = {"model": "m", "system": [{"type": "text", "text": "x" * 9000}],
    ...           "messages": [{"role": "user", "content": "hi"}]}
    >>> marked = with_breakpoints(params, min_tokens=2048)
    >>> marked["system"][-1]["cache_control"]
    {'type': 'ephemeral'}
"""

from __future__ import annotations

import json
from typing import Any

from actors.token_estimate import estimate_input_tokens, text_tokens

MAX_BREAKPOINTS = 4
"""The API's limit of ``cache_control`` marks per request."""
_MARK = {"type": "ephemeral"}


def with_breakpoints(params: dict[str, Any], min_tokens: int) -> dict[str, Any]:
    """``params`` with marks on the tools, system and history prefixes that can be cached.

    Returns a new dict; ``params`` and the lists in it are not changed.
    """
    free = MAX_BREAKPOINTS - count_marks(params)
    out = dict(params)
    tools = list(params.get("tools") or ())
    system = params.get("system")
    messages = list(params.get("messages") or ())
    prefix = sum(4 + text_tokens(json.dumps(t, default=str)) for t in tools)
    if tools and free > 0 and prefix >= min_tokens and "cache_control" not in tools[-1]:
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(_MARK)}]
        free -= 1
    prefix = estimate_input_tokens({"tools": tools, "system": system})
    if isinstance(system, list) and system and free > 0 and prefix >= min_tokens \
            and "cache_control" not in system[-1]:
        out["system"] = [*system[:-1], {**system[-1], "cache_control": dict(_MARK)}]
        free -= 1
    if len(messages) > 1 and free > 0:
        history = messages[:-1]
        prefix = estimate_input_tokens({"tools": tools, "system": system, "messages": history})
        last = _marked_turn(history[-1]) if prefix >= min_tokens else None
        if last is not None:
            out["messages"] = [*history[:-1], last, messages[-1]]
    return out


def count_marks(params: dict[str, Any]) -> int:
    """How many ``cache_control`` marks the request already carries (automatic one included)."""
    found = 1 if params.get("cache_control") else 0
    blocks: list[Any] = [*(params.get("tools") or ())]
    if isinstance(params.get("system"), list):
        blocks += params["system"]
    for message in params.get("messages") or ():
        if isinstance(message.get("content"), list):
            blocks += message["content"]
    return found + sum(1 for b in blocks if isinstance(b, dict) and b.get("cache_control"))


def _marked_turn(message: dict[str, Any]) -> dict[str, Any] | None:
    """The turn with its last block marked (a string becomes one text block); None if marked."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return None
        return {**message, "content": [{"type": "text", "text": content,
                                        "cache_control": dict(_MARK)}]}
    if not content or not isinstance(content[-1], dict) or "cache_control" in content[-1]:
        return None
    return {**message, "content": [*content[:-1], {**content[-1], "cache_control": dict(_MARK)}]}
