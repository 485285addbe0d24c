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
import math
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


class InputCalibration:
    """Scales the generous estimate toward what a model really bills, per model.

    Why: every call in flight holds its estimate against the input-tokens/min bucket until its
    settle, so with 50 calls in flight a 3x over-estimate keeps most of the bucket reserved for
    tokens that never come, and a binding limit is reached late. The ratio of billed to
    estimated input tokens is steady for one agent and model, so it is learnt: it rises at once
    to a higher ratio seen and decays slowly toward lower ones, and a margin stays on top; the
    scaled estimate is never above the raw one. Only the limiter's reservation uses it: budgets
    and the context-window check keep the raw upper bound.

    Example:
        >>> calibration = InputCalibration()
        >>> for _ in range(5):
        ...     calibration.observe("m", estimated=300, billed=100)
        >>> calibration.scaled("m", 300)
        105
    """

    def __init__(self, *, margin: float = 1.05, decay: float = 0.1, warmup: int = 5) -> None:
        self._margin, self._decay, self._warmup = margin, decay, warmup
        self._ratios: dict[str, tuple[float, int]] = {}

    def __repr__(self) -> str:
        return f"InputCalibration({ {m: round(r, 3) for m, (r, _) in self._ratios.items()} })"

    def scaled(self, model: str, estimate: int) -> int:
        """The estimate to reserve for a call to ``model`` (the raw one until warmed up)."""
        ratio, seen = self._ratios.get(model, (1.0, 0))
        if seen < self._warmup:
            return estimate
        return min(estimate, math.ceil(estimate * ratio * self._margin))

    def observe(self, model: str, *, estimated: int, billed: int) -> None:
        """Learn from one answered call: its raw estimate and its billed limited input."""
        if estimated <= 0:
            return
        seen_ratio = billed / estimated
        ratio, seen = self._ratios.get(model, (seen_ratio, 0))
        ratio = seen_ratio if seen_ratio > ratio else ratio + self._decay * (seen_ratio - ratio)
        self._ratios[model] = (ratio, seen + 1)
