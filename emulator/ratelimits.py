"""Per key and model class rate limits, as the API enforces and reports them.

The API meters requests, input tokens and output tokens per minute with continuously refilled
token buckets (``docs/messages-api.md`` §4.1): a bucket holds at most one minute's allowance and
refills at ``limit / 60`` per second. A request takes 1 request, its uncached input plus cache
writes, and its whole ``max_tokens`` up front; the output estimate is corrected when the
response ends (:meth:`Admission.settle`). Any bucket that would go negative refuses the request
with a 429 that takes nothing and says how long the deficit needs to refill.

Why not ``aiolimiter``: its ``AsyncLimiter`` is a leaky bucket that *waits* for capacity on the
event loop's own clock. The emulator needs the opposite: a non-blocking check-and-take of
arbitrary amounts across three buckets at once (all or nothing), refunds, the time a bucket is
full again (for the ``*-reset`` headers) and a clock tests can drive. That is the small
:class:`_Bucket` below.

Example:
    >>> book = RateLimitBook(lambda model_class: Limits(rpm=2, otpm=1000), clock=lambda: 0.0)
    >>> first = book.admit(key="k", model_class="haiku", input_tokens=10, max_tokens=600)
    >>> first.ok, book.admit(key="k", model_class="haiku", input_tokens=10, max_tokens=600).ok
    (True, False)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LimitKind = Literal["requests", "input_tokens", "output_tokens", "concurrency"]

_DOCS = "https://docs.claude.com/en/api/rate-limits"
_EPSILON = 1e-9
"""Tolerance for float refill: a request retried exactly ``retry_after`` later must pass."""

_UNIT = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}


class Limits(BaseModel):
    """The per-minute limits of one model class for one key; ``None`` means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute."""
    itpm: int | None = Field(default=None, gt=0)
    """Input tokens per minute (uncached input plus cache writes; cache reads are free)."""
    otpm: int | None = Field(default=None, gt=0)
    """Output tokens per minute (``max_tokens`` reserved at start, refunded at the end)."""
    max_concurrency: int | None = Field(default=None, gt=0)
    """Requests in flight at once; an emulator knob the API does not document."""


class _Bucket:
    """A token bucket refilled continuously; its level is recomputed lazily from the clock."""

    __slots__ = ("_level", "_stamp", "capacity", "rate")

    def __init__(self, capacity: int, now: float, level: float | None = None) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self._level = self.capacity if level is None else min(level, self.capacity)
        self._stamp = now

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (refill since the last look, capped at capacity)."""
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._level

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0 when it already is)."""
        deficit = amount - self.level(now)
        return 0.0 if deficit <= _EPSILON else deficit / self.rate

    def take(self, amount: float, now: float) -> None:
        """Remove ``amount``; callers check :meth:`wait_for` first."""
        self._level = self.level(now) - amount

    def give(self, amount: float, now: float) -> None:
        """Return ``amount`` (a refund), never above capacity."""
        self._level = min(self.capacity, self.level(now) + amount)

    def full_in(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level(now)) / self.rate


class _Lane:
    """The buckets and in-flight count of one (key, model class)."""

    __slots__ = ("buckets", "in_flight", "limits")

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.buckets: dict[str, _Bucket] = {}
        self.in_flight = 0
        self.retune(limits, now)

    def retune(self, limits: Limits, now: float) -> None:
        """Adopt new limits, keeping what is already used (it may leave a level below 0)."""
        old = self.buckets
        self.limits = limits
        self.buckets = {}
        for kind, cap in (("requests", limits.rpm), ("input_tokens", limits.itpm),
                          ("output_tokens", limits.otpm)):
            if cap is not None:
                level = None
                if kind in old:
                    level = cap - (old[kind].capacity - old[kind].level(now))
                self.buckets[kind] = _Bucket(cap, now, level)


class Admission:
    """The book's answer to one request: admitted (then settled once) or refused with a 429.

    Not a pydantic model: it is a live handle on the book's buckets (headers read the current
    levels, :meth:`settle` refunds), used inside the emulator and never serialised.
    """

    __slots__ = (
        "_book",
        "_lane",
        "_reserved",
        "_settled",
        "limit_kind",
        "message",
        "ok",
        "retry_after_s",
    )

    def __init__(self, book: RateLimitBook, lane: _Lane, *, ok: bool,
                 limit_kind: LimitKind | None = None, retry_after_s: float | None = None,
                 message: str = "", reserved_output: int = 0) -> None:
        self.ok = ok
        """Whether the request may proceed."""
        self.limit_kind = limit_kind
        """Which limit refused it: requests, input_tokens, output_tokens or concurrency."""
        self.retry_after_s = retry_after_s
        """Seconds until a retry of the same request would pass; None when no wait helps."""
        self.message = message
        """The 429's error message, worded like the API's."""
        self._book = book
        self._lane = lane
        self._reserved = reserved_output
        self._settled = not ok  # a refusal took nothing, so there is nothing to give back

    def __repr__(self) -> str:
        return (f"Admission(ok={self.ok}, limit_kind={self.limit_kind!r}, "
                f"retry_after_s={self.retry_after_s})")

    def headers(self) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers (and ``retry-after*`` on a refusal), now.

        Token ``remaining`` values are rounded to the nearest thousand and ``reset`` is when the
        bucket is full again, both as the API documents (§6.2). A family whose limit is
        unlimited is left out.
        """
        headers = self._book.lane_headers(self._lane)
        if not self.ok and self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            # Not an API header but the SDK prefers it (§11.3), so retries land on time.
            headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000)))
        return headers

    def settle(self, output_tokens: int) -> None:
        """End the request: refund unused ``max_tokens`` to OTPM and free the concurrency slot.

        Idempotent, and a no-op for a refused admission.

        Args:
            output_tokens: The output tokens the response really produced.
        """
        if self._settled:
            return
        self._settled = True
        self._lane.in_flight -= 1
        bucket = self._lane.buckets.get("output_tokens")
        unused = self._reserved - output_tokens
        if bucket is not None and unused > 0:
            bucket.give(unused, self._book.now())


class RateLimitBook:
    """Every (key, model class)'s buckets, created on first use from ``limits_for``.

    Args:
        limits_for: Returns the limits of a model class; read on every admission, so a
            config change takes effect at once (levels already used are kept).
        clock: Monotonic seconds; tests pass a fake one.
        wall_clock: Epoch seconds, only for the RFC 3339 ``*-reset`` headers.
    """

    def __init__(self, limits_for: Callable[[str], Limits],
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._limits_for = limits_for
        self._clock = clock
        self._wall_clock = wall_clock
        self._lanes: dict[tuple[str, str], _Lane] = {}

    def now(self) -> float:
        """The book's monotonic time."""
        return self._clock()

    def admit(self, *, key: str, model_class: str, input_tokens: int,
              max_tokens: int) -> Admission:
        """Check and take one request's share of every limit, all or nothing.

        Args:
            key: Who is limited (the API key, or its workspace).
            model_class: The tier whose limits the model shares.
            input_tokens: Uncached input plus cache writes (the caller leaves cache reads out).
            max_tokens: The request's ``max_tokens``, reserved from OTPM until settled.

        Returns:
            An admission; when refused it took nothing.
        """
        now = self._clock()
        lane = self._lane(key, model_class, now)
        need = {"requests": 1, "input_tokens": input_tokens, "output_tokens": max_tokens}
        for kind, bucket in lane.buckets.items():
            if need[kind] > bucket.capacity:
                return self._never(lane, kind, need[kind], bucket)
        waits = {kind: b.wait_for(need[kind], now) for kind, b in lane.buckets.items()}
        kind, wait = max(waits.items(), key=lambda item: item[1], default=("requests", 0.0))
        if wait > 0:
            cap = int(lane.buckets[kind].capacity)
            return Admission(self, lane, ok=False, limit_kind=kind,  # type: ignore[arg-type]
                             retry_after_s=wait, message=_exceeds(cap, kind))
        cap = lane.limits.max_concurrency
        if cap is not None and lane.in_flight >= cap:
            # No honest retry-after exists: a slot frees when some response ends.
            return Admission(self, lane, ok=False, limit_kind="concurrency",
                             message=_too_concurrent(cap))
        for kind, bucket in lane.buckets.items():
            bucket.take(need[kind], now)
        lane.in_flight += 1
        return Admission(self, lane, ok=True, reserved_output=max_tokens)

    def reset(self) -> None:
        """Forget every bucket: all limits start full again (outstanding admissions no-op)."""
        self._lanes.clear()

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Current levels per lane, for stats and debugging; keys appear only as fingerprints."""
        now = self._clock()
        out: dict[str, dict[str, object]] = {}
        for (key, model_class), lane in self._lanes.items():
            entry: dict[str, object] = {
                kind: {"limit": int(b.capacity), "remaining": round(b.level(now), 3)}
                for kind, b in lane.buckets.items()}
            entry["in_flight"] = lane.in_flight
            out[f"{_fingerprint(key)}/{model_class}"] = entry
        return out

    def lane_headers(self, lane: _Lane) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers of ``lane`` at this moment."""
        now, wall = self._clock(), self._wall_clock()
        headers: dict[str, str] = {}
        requests = lane.buckets.get("requests")
        if requests is not None:
            _family(headers, "requests", requests.capacity, math.floor(requests.level(now)),
                    wall + requests.full_in(now))
        token_buckets = [lane.buckets[k] for k in ("input_tokens", "output_tokens")
                         if k in lane.buckets]
        for kind, family in (("input_tokens", "input-tokens"), ("output_tokens", "output-tokens")):
            if kind in lane.buckets:
                b = lane.buckets[kind]
                _family(headers, family, b.capacity, _thousands(b.level(now)),
                        wall + b.full_in(now))
        if token_buckets:
            # Without workspace limits the "tokens" family is input + output, and its reset
            # is the earlier of the two, as in the real capture quoted in
            # docs/messages-api.md §4.2.
            _family(headers, "tokens", sum(b.capacity for b in token_buckets),
                    sum(_thousands(b.level(now)) for b in token_buckets),
                    wall + min(b.full_in(now) for b in token_buckets))
        return headers

    def _lane(self, key: str, model_class: str, now: float) -> _Lane:
        limits = self._limits_for(model_class)
        lane = self._lanes.get((key, model_class))
        if lane is None:
            lane = self._lanes[(key, model_class)] = _Lane(limits, now)
        elif lane.limits != limits:
            lane.retune(limits, now)
        return lane

    def _never(self, lane: _Lane, kind: str, need: int, bucket: _Bucket) -> Admission:
        """Refuse a request larger than a whole minute's allowance: no wait can admit it."""
        cap = int(bucket.capacity)
        message = (f"This request would exceed the rate limit for your organization of "
                   f"{cap:,} {_UNIT[kind]} per minute: it needs {need:,}, more than the limit "
                   f"allows at once. For details, refer to: {_DOCS}. Please reduce the prompt "
                   f"length or the maximum tokens requested.")
        return Admission(self, lane, ok=False, limit_kind=kind,  # type: ignore[arg-type]
                         message=message)


def _exceeds(cap: int, kind: str) -> str:
    """The API's 429 wording for a bucket that is short right now."""
    return (f"This request would exceed the rate limit for your organization of {cap:,} "
            f"{_UNIT[kind]} per minute. For details, refer to: {_DOCS}. You can see the "
            f"response headers for current usage. Please reduce the prompt length or the "
            f"maximum tokens requested, or try again later. You may also contact sales at "
            f"https://www.anthropic.com/contact-sales to discuss your options for a rate "
            f"limit increase.")


def _too_concurrent(cap: int) -> str:
    return (f"This request would exceed your organization's maximum of {cap:,} concurrent "
            f"requests. Please try again once an earlier request has finished.")


def _thousands(level: float) -> int:
    """Round to the nearest thousand, halves up (the API rounds token headers so)."""
    return math.floor(level / 1000 + 0.5) * 1000


def _rfc3339(epoch: float) -> str:
    """Second-precision UTC time, rounded up so a client waiting until then finds it full."""
    return datetime.fromtimestamp(math.ceil(epoch - _EPSILON), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _family(headers: dict[str, str], family: str, limit: float, remaining: int,
            full_at: float) -> None:
    prefix = f"anthropic-ratelimit-{family}"
    headers[f"{prefix}-limit"] = str(int(limit))
    headers[f"{prefix}-remaining"] = str(max(0, remaining))
    headers[f"{prefix}-reset"] = _rfc3339(full_at)


def _fingerprint(key: str) -> str:
    """A short stable stand-in for a key, so stats never show the key itself."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:8]
