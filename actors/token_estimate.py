"""A fast, deliberately generous client-side estimate of a request's input tokens.

Why not ``count_tokens``: it is an HTTP round trip (with its own rate limit) on every call, and
the limiter and the budget only need an upper bound that is settled with the real usage after
the response. Why generous: a low estimate would let a burst past the input-tokens/min limit
(a 429) or a budget cap; a high one only delays grants until the settle refunds the difference.

The rule: one token per 3 UTF-8 bytes of text (Claude's tokenizer averages about 4 for English
prose, so 3 over-estimates by about a third), plus small fixed overheads per message, block and
tool; tool schemas and non-text blocks count by the size of their JSON.
"""

from __future__ import annotations

import json
from typing import Any

_BYTES_PER_TOKEN = 3
_PER_REQUEST = 8
_PER_MESSAGE = 6
_PER_BLOCK = 4


def text_tokens(text: str) -> int:
    """Tokens of a plain string (rounded up)."""
    return -(-len(text.encode()) // _BYTES_PER_TOKEN)


def _content_tokens(content: str | list[Any]) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    total = 0
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            total += _PER_BLOCK + text_tokens(block.get("text", ""))
        else:
            total += _PER_BLOCK + text_tokens(json.dumps(block, default=str))
    return total


def estimate_input_tokens(params: dict[str, Any]) -> int:
    """Upper-bound estimate of the input tokens of Messages API ``params``.

    Example:
        >>> estimate_input_tokens({"messages": [{"role": "user", "content": "hello"}]})
        16
    """
    total = _PER_REQUEST
    system = params.get("system")
    if system:
        total += _content_tokens(system)
    for tool in params.get("tools") or ():
        total += _PER_BLOCK + text_tokens(json.dumps(tool, default=str))
    for message in params.get("messages") or ():
        total += _PER_MESSAGE + _content_tokens(message.get("content", ""))
    return total
