"""One key's token buckets, concurrency count and queue of grant requests, and their clock.

The arithmetic of :class:`~actors.ratelimiter.RateLimiter`, kept apart so that the actor class
reads as the protocol it speaks. Levels are recomputed lazily from the clock on each look.

Example:
    >>> from actors.limits import BucketKey, TierLimits
    >>> b = KeyBuckets(BucketKey(account="a1b2c3", tier="haiku"),
    ...                TierLimits(rpm=60, itpm=6_000, otpm=600, max_concurrency=2),
    ...                level=[0.0, 0.0, 0.0], stamp=0.0)
    >>> b.refill(10.0); b.level
    [10.0, 1000.0, 100.0]
    >>> b.blocked_until(Need(input_tokens=1_500, output_tokens=0), now=10.0, grace_until=0.0)
    15.0
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from actors.limiter_breaker import Breaker
from actors.limiter_fair import FairQueue
from actors.limits import BucketKey, HeaderReading, Need, TierLimits

_ROUNDING = (2.0, 1000.0, 1000.0)
"""The API rounds token ``remaining`` values to the nearest thousand (``docs/messages-api.md``
§4.2); request counts are exact, but a call or two may be in transit between a lease and us."""
_DRIFT_SHARE = 0.02
"""Drift below this share of a bucket is noise (uses leases have not reported yet), not news."""
_EPS = 1e-6


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and timers; tests pass a fake one and drive it."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopClock:
    """``time.monotonic`` and the running event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)


class KeyBuckets:
    """One key's three buckets, its concurrency count and its queue of grant requests."""

    def __init__(self, key: BucketKey, limits: TierLimits, *, level: list[float],
                 stamp: float) -> None:
        self.key, self.limits = key, limits
        self.level, self.stamp = level, stamp
        self.held = [0.0, 0.0, 0.0]
        self.in_flight = [0.0, 0.0, 0.0]
        """The part of ``held`` reserved by calls in flight (as the leases last reported):
        the server has already taken what they use, so header checks leave it out."""
        self.in_use = 0
        self.paused_until = 0.0
        self.probing = False
        """Since a 429: one call (the probe) at a time until the server answers one."""
        self.probe_until = 0.0
        """The probe out now is given up on then (its answer lost), and another goes."""
        self.breaker = Breaker()
        """Repeated overloaded answers pause the key, then it ramps up (``limiter_breaker``)."""
        self.waiters = FairQueue()
        """Grant requests (the limiter's ``_Waiter``): fair between jobs, FIFO within one."""
        self.timer: Cancellable | None = None
        self.depth_shown = -1
        """The queue depth the metric last showed (it is set on a change only)."""

    def refill(self, now: float) -> None:
        """Add what flowed in since the last look, up to capacity minus what stocks hold."""
        elapsed = now - self.stamp
        if elapsed <= 0:
            return
        for i, (cap, rate) in enumerate(zip(self.limits.capacity, self.limits.refill_per_s,
                                            strict=True)):
            top = cap - self.held[i]
            if self.level[i] < top:
                self.level[i] = min(top, self.level[i] + elapsed * rate)
        self.stamp = now

    def clamp(self) -> None:
        for i, cap in enumerate(self.limits.capacity):
            self.level[i] = min(self.level[i], cap - self.held[i])

    def too_big(self, need: Need) -> str | None:
        """Why ``need`` can never be granted, or None."""
        for amount, cap, what, fix in (
                (need.input_tokens, self.limits.itpm, "input tokens", "shorten the prompt"),
                (need.output_tokens, self.limits.otpm, "output tokens", "lower max_tokens")):
            if amount > cap:
                return (f"{self.key.tier}: the request needs {amount:,} {what} but the limit "
                        f"is {cap:,}/min; {fix} or raise the tier's limit")
        return None

    def blocked_until(self, need: Need, now: float, grace_until: float) -> float | None:
        """None if ``need`` fits now; else when to look again (``inf``: on an event only)."""
        if now < self.paused_until:
            return self.paused_until
        if self.probing and now < self.probe_until:
            return self.probe_until
        if need.slot:
            if now < grace_until:
                return grace_until
            if self.in_use >= self.breaker.concurrency(self.limits.max_concurrency):
                return math.inf
        wait = 0.0
        for i, amount in enumerate(amounts(need)):
            deficit = amount - self.level[i]
            if deficit > _EPS:
                if amount > self.limits.capacity[i] - self.held[i]:
                    return math.inf  # only stock coming back can make room
                wait = max(wait, deficit / self.limits.refill_per_s[i])
        return None if wait == 0.0 else now + wait

    def set_in_flight(self, lease_in_flight: list[float], reported: Iterable[float],
                      lease_held: list[float]) -> None:
        """Replace one lease's calls-in-flight figure (never above what it holds)."""
        for i, (amount, held) in enumerate(zip(reported, lease_held, strict=True)):
            amount = min(max(0.0, amount), max(0.0, held))
            self.in_flight[i] += amount - lease_in_flight[i]
            lease_in_flight[i] = amount

    def move_to_stock(self, lease_held: list[float], quantities: Iterable[float]) -> None:
        """Take ``quantities`` out of the buckets into a lease's stock (``lease_held``)."""
        for i, amount in enumerate(quantities):
            self.level[i] -= amount
            self.held[i] += amount
            lease_held[i] += amount

    def correct(self, reading: HeaderReading) -> None:
        """Lower our level where the server says fewer remain, beyond rounding and noise.

        What we count as unspent is the level plus the leases' unused stock: not the
        reservations of calls in flight, which the server has already taken (their real size;
        it says so in ``remaining``). Counting them too took a whole burst's calls in flight
        away a second time, for good (a fifth of the bucket in ``benchmarks/jobs.py``).
        Only the excess over the tolerance is taken away: part of the gap is uses that leases
        have not reported yet, which their reports will take away again.
        """
        values = (reading.requests, reading.input_tokens, reading.output_tokens)
        for i, value in enumerate(values):
            if value is None:
                continue
            cap = self.limits.capacity[i]
            server = min(cap, value + reading.age_s * self.limits.refill_per_s[i])
            tolerance = max(_ROUNDING[i], _DRIFT_SHARE * cap)
            unspent = self.level[i] + max(0.0, self.held[i] - self.in_flight[i])
            if unspent - server > tolerance:
                self.level[i] -= unspent - server - tolerance


def amounts(need: Need) -> tuple[int, int, int]:
    """What one need takes from the three buckets."""
    return (int(need.request), need.input_tokens, need.output_tokens)
