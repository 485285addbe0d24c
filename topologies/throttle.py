"""A session's own ceiling, below the cluster's: calls in flight, requests and input tokens/min.

The cluster's RateLimiter holds the API key's limits for every session on every node; a
session that must stay smaller (a background job beside interactive ones) gets a
:class:`SessionThrottle` instead of changing those limits. It lives in the driver, gates the
session's agent calls before they are sent, and disappears with the session: another session's
limits, and the cluster's, never change. The RateLimiter still applies on top.

``aiolimiter.AsyncLimiter`` is the per-minute bucket (a leaky bucket waiting on the local loop,
which is all a single driver needs); an ``asyncio.Semaphore`` bounds calls in flight.

Example:
    >>> import asyncio
    >>> throttle = SessionThrottle(max_concurrent=2, tokens_per_minute=6_000)
    >>> async def one_call() -> int:
    ...     async with throttle.hold(input_tokens=100):
    ...         return throttle.in_flight
    >>> asyncio.run(one_call())
    1
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

from actors.errors import ConfigError

__all__ = ["SessionThrottle"]


class SessionThrottle:
    """Calls in flight, requests per minute and input tokens per minute of one session.

    Args:
        max_concurrent: Calls of the session in flight at once.
        tokens_per_minute: Estimated input tokens the session may send per minute.
        requests_per_minute: Calls the session may start per minute (None: no own cap).

    Raises:
        ConfigError: a limit is below 1.
    """

    def __init__(self, max_concurrent: int, tokens_per_minute: int,
                 requests_per_minute: int | None = None) -> None:
        limits = {"max_concurrent": max_concurrent, "tokens_per_minute": tokens_per_minute,
                  "requests_per_minute": requests_per_minute}
        bad = {name: v for name, v in limits.items() if v is not None and v < 1}
        if bad:
            raise ConfigError(f"throttle limits must be >= 1, got {bad}")
        self.max_concurrent, self.tokens_per_minute = max_concurrent, tokens_per_minute
        self.requests_per_minute = requests_per_minute
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tokens = AsyncLimiter(tokens_per_minute, 60)
        self._requests = (AsyncLimiter(requests_per_minute, 60)
                          if requests_per_minute is not None else None)
        self.in_flight = 0
        """Calls holding a slot now."""
        self.peak_in_flight = 0
        """The most calls that ever held a slot at once."""

    def __repr__(self) -> str:
        return (f"SessionThrottle(in_flight={self.in_flight}/{self.max_concurrent}, "
                f"tokens_per_minute={self.tokens_per_minute}, "
                f"requests_per_minute={self.requests_per_minute})")

    @asynccontextmanager
    async def hold(self, input_tokens: int) -> AsyncIterator[None]:
        """Wait for a slot and the call's share of the minute, then hold the slot.

        A call larger than a whole minute's tokens waits for a full minute's worth (it could
        never fit otherwise; the API would still take it).
        """
        async with self._slots:
            if self._requests is not None:
                await self._requests.acquire()
            await self._tokens.acquire(max(1, min(input_tokens, self.tokens_per_minute)))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1
