"""The emulator's deterministic token estimator (to be completed by the emulator core).

A request's input is flattened into ``Segment``s in the API's prefix order (tools -> system ->
messages); the input token count of a request is the sum of its segments' tokens, so the
prompt cache can split a count exactly at a breakpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Segment:
    """One cacheable block of a request's input, in prefix order."""

    tokens: int
    """This block's share of the request's input tokens."""
    digest: bytes
    """Hash of the block's content (role and kind included), stable across requests."""
    cache_ttl: Literal["5m", "1h"] | None
    """The block's own ``cache_control`` breakpoint TTL, or None when it has none."""
