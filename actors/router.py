"""Adaptive routing: pick the tier per request, and judge whether a reply is good enough.

The built-in router is the performance guide's model-selection decision tree, made concrete
(``docs/configuration.md``, "Adaptive routing"):

    critical domain (legal, medical, financial...)            -> opus
    complex reasoning (analyze, compare, evaluate...), a long
      prompt, or a long answer needed (max_tokens)            -> sonnet
    otherwise (list, find, extract, summarize, short tasks)   -> haiku

A user function ``(AskRequest) -> tier`` replaces it (``AgentSpec(router=fn)``). Whatever picks
the tier, a reply that fails its validation (``AskRequest.output_schema`` or ``check``) is sent
again one tier up (:func:`tier_above`), and the Ledger records the failed attempt as
``escalated``: a cheap first guess costs little when it is wrong, and the escalations say how
often it is.

Example:
    >>> from actors.messages import AskRequest
    >>> route(AskRequest(prompt="List the rivers named in this text: ..."))
    'haiku'
    >>> route(AskRequest(prompt="Compare the two treaties and evaluate their effects."))
    'sonnet'
    >>> route(AskRequest(prompt="Is this clause of the contract legal in France?"))
    'opus'
    >>> tier_above("haiku"), tier_above("opus")
    ('sonnet', None)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import ValidationError

from actors.tiers import TIERS, Tier

if TYPE_CHECKING:
    from actors.messages import AskRequest

__all__ = ["reply_problem", "route", "tier_above"]

CRITICAL_WORDS = ("legal", "lawsuit", "contract", "medical", "diagnosis", "dosage",
                  "financial", "tax", "compliance")
"""The guide's "is the task critical? (legal, medical, financial)": worth the top tier."""
COMPLEX_WORDS = ("analyze", "analyse", "synthesize", "synthesise", "evaluate", "compare",
                 "prove", "design", "critique")
"""The guide's "does it require complex reasoning?" keywords."""
LONG_PROMPT_CHARS = 12_000
"""About 3,000 tokens: above this, a prompt is long enough to need the middle tier."""
LONG_ANSWER_TOKENS = 2_048
"""An answer allowed more output than this is an essay, not data processing."""


def route(request: AskRequest) -> Tier:
    """The tier the guide's decision tree picks for ``request`` (length, keywords, output)."""
    text = request.prompt.lower()  # the task, not the standing instructions (same for all)
    if _mentions(text, CRITICAL_WORDS):
        return "opus"
    if (_mentions(text, COMPLEX_WORDS) or len(request.prompt) > LONG_PROMPT_CHARS
            or request.max_tokens > LONG_ANSWER_TOKENS):
        return "sonnet"
    return "haiku"


def tier_above(tier: Tier) -> Tier | None:
    """The next tier up, or None at the top."""
    index = TIERS.index(tier)
    return TIERS[index + 1] if index + 1 < len(TIERS) else None


def reply_problem(text: str, request: AskRequest) -> str | None:
    """Why the reply fails ``request``'s validation, or None when it passes (or has none).

    A schema accepts the JSON alone or inside one fenced code block; a user check that raises
    counts as a failed check (the reply is judged, the agent goes on).
    """
    if request.output_schema is not None:
        try:
            request.output_schema.model_validate_json(_unfenced(text))
        except ValidationError as exc:
            return f"the reply is not a valid {request.output_schema.__name__} " \
                   f"({exc.error_count()} problem(s))"
    if request.check is not None:
        try:
            passed = bool(request.check(text))
        except Exception as exc:  # a user's check: its failure is the reply's verdict
            return f"the reply check raised {type(exc).__name__}"
        if not passed:
            return "the reply failed its check"
    return None


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{word}", text) for word in words)


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\n(.*)\n```\s*$", re.DOTALL)


def _unfenced(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text
