"""The tests' one fake clock: time moves only when a test says so; due timers fire as it does.

Production code takes time in two shapes, and this clock is both:

* a callable returning seconds (the Ledger's reservation expiry, the emulator's prompt cache
  and rate-limit book): pass the clock itself, and ``clock.wall`` where epoch seconds are
  wanted for headers;
* :class:`actors.limiter_buckets.Clock` (``now`` and ``call_at``) for the RateLimiter, whose
  waiters sleep on timers: :meth:`FakeClock.advance` fires them in time order.

Example:
    >>> clock = FakeClock(start=10.0)
    >>> fired = []
    >>> _ = clock.call_at(12.0, lambda: fired.append(clock.now()))
    >>> clock.advance(1.0); fired, clock()
    ([], 11.0)
    >>> clock.advance(5.0); fired, clock()
    ([12.0], 16.0)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

WALL_START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC).timestamp()
"""The epoch instant ``wall()`` reads when the clock reads 0."""


class FakeClock:
    """Seconds from ``start``, moved by :meth:`advance` (or by setting ``t``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        """Epoch seconds: ``WALL_START`` plus the clock's reading."""
        return WALL_START + self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        """Run ``callback`` once the clock reaches ``when`` (cancellable)."""
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move on by ``seconds``, firing due timers in order at their own times."""
        end = self.t + seconds
        while self._timers and self._timers[0][0] <= end + 1e-9:  # float sums drift a hair
            when, _, timer = heapq.heappop(self._timers)
            self.t = max(self.t, when)
            if not timer.cancelled:
                timer.callback()
        self.t = end


class _Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True
