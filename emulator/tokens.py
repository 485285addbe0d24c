"""The emulator's deterministic token estimator, for input and for output.

Input. A request's input is flattened into ``Segment``s in the API's prefix order (tools ->
system -> messages); the input token count of a request is the sum of its segments' tokens, so
the prompt cache can split a count exactly at a breakpoint. The estimate of each piece:

* text: ``ceil(utf-8 bytes / 4)`` (0 for an empty string);
* every content block (and a string ``system`` or string message ``content``, which count as
  one text block): +1 (``BLOCK_OVERHEAD``);
* every message: +3 (``MESSAGE_OVERHEAD``, the role framing), folded into its first block;
* every tool definition: +8 (``TOOL_OVERHEAD``) + the text estimate of its JSON
  (name, description, input schema);
* ``tool_use``: the text estimate of ``name`` + its input JSON; ``tool_result``: its content;
* ``image`` and non-text ``document`` sources: a flat 1,600 (``MEDIA_TOKENS``);
* ``thinking`` / ``redacted_thinking`` from earlier turns: 0 (the API ignores them too).

``count_input(body)`` (the ``count_tokens`` answer) is the sum of ``segments(body)``, and equals
``input_tokens + cache_creation_input_tokens + cache_read_input_tokens`` of a create.

Output. A reply's text is cut into pieces by :func:`split_text` (a run of up to 8 non-space
characters with the whitespace before it; a trailing whitespace run is a piece too), and
**each piece is one output token**: a stream sends one ``text_delta`` (or ``input_json_delta``
for a tool's input JSON, cut the same way) per token, so a client can count the output tokens
of a reply, even one cut short, by counting deltas.

Example:
    >>> body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    >>> count_input(body), sum(s.tokens for s in segments(body))
    (5, 5)
    >>> split_text("Hello, wonderful world")
    ['Hello,', ' wonderfu', 'l', ' world']
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

__all__ = [
    "BLOCK_OVERHEAD",
    "MEDIA_TOKENS",
    "MESSAGE_OVERHEAD",
    "TOOL_OVERHEAD",
    "Segment",
    "count_and_check",
    "count_input",
    "has_cache_control",
    "segments",
    "split_text",
    "text_tokens",
]

BLOCK_OVERHEAD = 1
MESSAGE_OVERHEAD = 3
TOOL_OVERHEAD = 8
MEDIA_TOKENS = 1_600

_PIECE = re.compile(r"\s*\S{1,8}|\s+")


@dataclass(frozen=True, slots=True)
class Segment:
    """One cacheable block of a request's input, in prefix order."""

    tokens: int
    """This block's share of the request's input tokens."""
    digest: bytes
    """Hash of the block's content (role and kind included), stable across requests."""
    cache_ttl: Literal["5m", "1h"] | None
    """The block's own ``cache_control`` breakpoint TTL, or None when it has none."""


def text_tokens(text: str) -> int:
    """``ceil(utf-8 bytes / 4)``: the estimate of a run of text."""
    size = len(text) if text.isascii() else len(text.encode())
    return (size + 3) // 4


def split_text(text: str) -> list[str]:
    """Cut output text into one-token pieces whose concatenation is ``text``."""
    return list(_pieces(text))


@lru_cache(maxsize=1024)
def _pieces(text: str) -> tuple[str, ...]:
    # Replies are deterministic, so the same texts come back again and again.
    return tuple(_PIECE.findall(text))


def count_input(body: dict[str, Any]) -> int:
    """The input token estimate of a (validated) request: the sum of its segments' tokens."""
    return count_and_check(body)[0]


def count_and_check(body: dict[str, Any]) -> tuple[int, bool]:
    """``(count_input(body), has_cache_control(body))`` in one pass, for the hot path."""
    total, marked = 0, body.get("cache_control") is not None
    for _, tokens, cache_control in _flatten(body):
        total += tokens
        marked = marked or bool(cache_control)
    return total, marked


def segments(body: dict[str, Any]) -> list[Segment]:
    """The request's input as segments in prefix order, for the prompt cache."""
    return [Segment(tokens, _digest(kind, block), _ttl(block))
            for (kind, block), tokens, _ in _flatten_blocks(body)]


def has_cache_control(body: dict[str, Any]) -> bool:
    """True when the request has a breakpoint anywhere (top-level or on a block).

    Without one nothing can be read from or written to the prompt cache, so the emulator can
    skip hashing the request.
    """
    return count_and_check(body)[1]


def _flatten(body: dict[str, Any]) -> Iterator[tuple[object, int, object]]:
    """(block, tokens, cache_control) in prefix order, without hashing anything."""
    for (_, block), tokens, cache_control in _flatten_blocks(body):
        yield block, tokens, cache_control


def _flatten_blocks(
    body: dict[str, Any],
) -> Iterator[tuple[tuple[str, Any], int, Any]]:
    """((kind, block), tokens, cache_control) of every block, message overhead folded in."""
    for tool in body.get("tools") or ():
        yield ("tool", tool), _tool_tokens(tool), _cache_control(tool)
    system = body.get("system")
    if isinstance(system, str):
        if system:
            yield ("system", system), BLOCK_OVERHEAD + text_tokens(system), None
    elif system:
        for block in system:
            yield ("system", block), _block_tokens(block), _cache_control(block)
    for message in body.get("messages") or ():
        role, content = message.get("role"), message.get("content")
        blocks = [content] if isinstance(content, str) else (content or ())
        for i, block in enumerate(blocks):
            tokens = _block_tokens(block) + (MESSAGE_OVERHEAD if i == 0 else 0)
            yield (str(role), block), tokens, _cache_control(block)


def _block_tokens(block: Any) -> int:
    """Estimate one content block (a bare string is a text block)."""
    if isinstance(block, str):
        return BLOCK_OVERHEAD + text_tokens(block)
    kind = block.get("type")
    if kind == "text":
        return BLOCK_OVERHEAD + text_tokens(block.get("text") or "")
    if kind in ("thinking", "redacted_thinking"):
        return 0
    if kind == "tool_use":
        return BLOCK_OVERHEAD + text_tokens(str(block.get("name", ""))
                                            + _canonical(block.get("input", {})))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return BLOCK_OVERHEAD + sum(_block_tokens(b) for b in content)
        return BLOCK_OVERHEAD + text_tokens(content if isinstance(content, str) else "")
    if kind == "image":
        return BLOCK_OVERHEAD + MEDIA_TOKENS
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            return BLOCK_OVERHEAD + text_tokens(str(source.get("data", "")))
        return BLOCK_OVERHEAD + MEDIA_TOKENS
    return BLOCK_OVERHEAD + text_tokens(_canonical(_without_cache_control(block)))


def _tool_tokens(tool: dict[str, Any]) -> int:
    return TOOL_OVERHEAD + text_tokens(_canonical(_without_cache_control(tool)))


def _cache_control(block: Any) -> Any:
    return block.get("cache_control") if isinstance(block, dict) else None


def _ttl(block: Any) -> Literal["5m", "1h"] | None:
    control = _cache_control(block)
    if not control:
        return None
    return "1h" if control.get("ttl") == "1h" else "5m"


def _digest(kind: str, block: Any) -> bytes:
    """Hash a block with its role, ignoring its breakpoint (moving a marker keeps the prefix).

    A string and the equivalent one-text-block list hash the same, as they mean the same.
    """
    if isinstance(block, str):
        block = {"type": "text", "text": block}
    payload = kind + "\x00" + _canonical(_without_cache_control(block))
    return hashlib.sha256(payload.encode()).digest()


def _without_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" not in block:
        return block
    return {k: v for k, v in block.items() if k != "cache_control"}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
