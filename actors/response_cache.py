"""The response cache: whole replies, keyed by everything that changes them, with a lifetime.

The performance guide's first cost lever: an identical request (a re-run, a retried pipeline, a
second user asking the same thing) is answered from a store instead of the API, at no cost.

- **Key**: a SHA-256 of the request as sent (model, system, messages, tools, tool_choice,
  max_tokens, stop sequences, ... every parameter it carries), without its prompt-cache
  marks (they change the bill, not the reply), plus the API key's account fingerprint: an entry
  never crosses keys unless the runtime is told to share (``RAYTROUPE_CACHE_SHARED=true``).
- **Value**: the whole reply (content, stop reason) with the usage and cost it was billed, so a
  hit can say what it saved.
- **Stores**: SQLite in the data dir (default; WAL, so the actors of one node share it) and
  Redis for a cluster (``RAYTROUPE_CACHE_URL=redis://host:6379/0``); see
  ``actors/response_cache_stores.py``.

Example:
    >>> parse_ttl("7d")
    604800.0
    >>> len(cache_key({"model": "m", "messages": []}, account="abc123"))
    64
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from actors.frozen import Frozen
from actors.messages import ContentBlock, Usage

CACHE_FILE = "response_cache.sqlite"
"""The SQLite store's file name inside the data directory."""

_TTL_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_TTL_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_ttl(text: str) -> float:
    """Seconds in a lifetime such as ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or ``"2w"``.

    Raises:
        ValueError: not a positive number followed by one of s, m, h, d, w; the message
            names the text and the units.
    """
    match = _TTL_PATTERN.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _TTL_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"cache TTL {text!r} is not a positive number followed by a unit "
                         f"(s, m, h, d or w), such as '1h' or '7d'")
    return float(match.group(1)) * _TTL_UNITS[unit]


def cache_key(params: dict[str, Any], account: str | None) -> str:
    """The key of a request: a SHA-256 of its parameters and, unless shared, its account.

    Prompt-cache marks (``cache_control``) are dropped first: a request with or without them
    gets the same reply.
    """
    blob = json.dumps({"request": _without_cache_marks(params), "account": account},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _without_cache_marks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list | tuple):
        return [_without_cache_marks(v) for v in value]
    return value


class CachedReply(Frozen):
    """One stored reply: what the API answered, what it was billed and when it was stored."""

    kind: Literal["cached_reply"] = "cached_reply"
    model: str
    content: tuple[ContentBlock, ...] = ()
    stop_reason: str | None = None
    usage: Usage = Usage()
    """The usage the API billed for the original call."""
    cost_usd: Decimal = Decimal(0)
    """What the original call cost: what each hit saves."""
    stored_at: float = Field(default_factory=time.time)


class CacheStats(Frozen):
    """What ``raytroupe cache stats`` shows: entries, lookups, hits and the USD they saved."""

    kind: Literal["cache_stats"] = "cache_stats"
    url: str
    entries: int = 0
    """Live (unexpired) entries."""
    lookups: int = 0
    hits: int = 0
    saved_usd: Decimal = Decimal(0)
    """The summed original cost of every reply served from the cache."""

    @property
    def hit_rate(self) -> float | None:
        """Hits per lookup; None before the first lookup."""
        return self.hits / self.lookups if self.lookups else None
