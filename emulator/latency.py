"""How long a reply takes: time to first token, then a steady rate of output tokens.

Per tier, ``total = ttft + output_tokens / tokens_per_second``, each term scaled by a seeded
jitter of +-20 %. The ``realistic`` profile puts typical replies (100-200 output tokens) at
haiku 1-3 s, sonnet 3-8 s and opus 8-20 s (public latency figures: bigger tiers start later and
stream slower); ``fast`` keeps the same ordering in a few milliseconds, for tests and demos.
``EmulatorConfig.latency_s`` replaces both with a fixed total per request: half before the first
token, half spread over the tokens (0 makes the emulator answer at once, for throughput runs).

Example:
    >>> model = LatencyModel(profile="realistic", latency_s=None, seed=1)
    >>> haiku, opus = model.plan("haiku", 150), model.plan("opus", 150)
    >>> haiku.total < opus.total
    True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["PROFILES", "LatencyModel", "Pace", "TierSpeed"]


@dataclass(frozen=True, slots=True)
class TierSpeed:
    """One tier's speed in a profile."""

    ttft_s: float
    """Seconds before the first token."""
    tokens_per_s: float
    """Output tokens per second once generation runs."""


PROFILES: dict[str, dict[str, TierSpeed]] = {
    "realistic": {
        "haiku": TierSpeed(ttft_s=0.6, tokens_per_s=120.0),
        "sonnet": TierSpeed(ttft_s=1.5, tokens_per_s=50.0),
        "opus": TierSpeed(ttft_s=3.0, tokens_per_s=20.0),
    },
    "fast": {
        "haiku": TierSpeed(ttft_s=0.001, tokens_per_s=100_000.0),
        "sonnet": TierSpeed(ttft_s=0.002, tokens_per_s=50_000.0),
        "opus": TierSpeed(ttft_s=0.004, tokens_per_s=25_000.0),
    },
}

_JITTER = 0.2


@dataclass(frozen=True, slots=True)
class Pace:
    """The timing of one reply."""

    ttft_s: float
    """Seconds from the request to the first token."""
    per_token_s: float
    """Seconds between two output tokens."""
    tokens: int
    """Output tokens the pace was planned for."""

    @property
    def total(self) -> float:
        """Seconds from the request to the last token."""
        return self.ttft_s + self.per_token_s * self.tokens

    @property
    def instant(self) -> bool:
        """True when nothing needs to wait (the fast path skips every sleep)."""
        return self.ttft_s <= 0.0 and self.per_token_s <= 0.0


class LatencyModel:
    """Plans the pace of each reply from the profile, the override and a seeded generator.

    Args:
        profile: ``fast`` or ``realistic``.
        latency_s: A fixed total per request overriding the profile, or None.
        seed: Seeds the jitter, so a run's latencies repeat.
    """

    def __init__(self, *, profile: str, latency_s: float | None, seed: int) -> None:
        self._speeds = PROFILES[profile]
        self._fixed = latency_s
        self._rng = random.Random(seed)

    def plan(self, tier: str, tokens: int, *, extra_s: float = 0.0) -> Pace:
        """The pace of a reply of ``tokens`` output tokens from ``tier``.

        Args:
            tier: The model's tier (unknown tiers pace like sonnet).
            tokens: The reply's output tokens.
            extra_s: Added before the first token (the ``slow`` fault).
        """
        if self._fixed is not None:
            if tokens == 0:
                return Pace(self._fixed + extra_s, 0.0, 0)
            half = self._fixed / 2
            return Pace(half + extra_s, half / tokens, tokens)
        speed = self._speeds.get(tier) or self._speeds["sonnet"]
        ttft = speed.ttft_s * self._jitter()
        per_token = self._jitter() / speed.tokens_per_s
        return Pace(ttft + extra_s, per_token, tokens)

    def _jitter(self) -> float:
        return 1.0 + self._rng.uniform(-_JITTER, _JITTER)
