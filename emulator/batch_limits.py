"""The Message Batches API's own rate limits, apart from the Messages limits.

The API meters batches separately (``docs/messages-api.md`` §6): requests per minute to the
batch endpoints (create, retrieve, list, results, cancel, delete), shared across models, and a
cap on the batch requests of one organisation waiting in the processing queue. Batch requests
themselves do not take the Messages RPM/ITPM/OTPM buckets. Over either limit, the endpoint
answers 429 ``rate_limit_error`` with ``retry-after``, as the Messages limits do.

The RPM bucket is the same continuously refilled bucket as the Messages limits
(:class:`emulator.ratelimits.RateLimitBook`'s, with a clock tests can drive).

Example:
    >>> book = BatchLimitBook(BatchLimits(rpm=1, max_queued_requests=10), clock=lambda: 0.0)
    >>> book.check_call("k") is None, book.check_call("k") is not None
    (True, True)
    >>> book.check_queue(queued=8, adding=3) is not None
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from emulator.ratelimits import _Bucket
from emulator.validation import ApiError

__all__ = ["BatchLimitBook", "BatchLimits"]


class BatchLimits(BaseModel):
    """The batch API's limits for one key; ``None`` is unlimited (the default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute to the batch endpoints (the API's tier 1-4: 50 / 1,000 / 2,000 /
    4,000)."""
    max_queued_requests: int | None = Field(default=None, gt=0)
    """Batch requests waiting or processing at once (the API's tier 1-4: 100,000 / 200,000 /
    300,000 / 500,000)."""


class BatchLimitBook:
    """One RPM bucket per key, and the processing-queue check.

    Args:
        limits: The limits.
        clock: Seconds (monotonic); tests pass a fake one.
    """

    def __init__(self, limits: BatchLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self._clock = limits, clock
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0
        """Batch endpoint calls answered 429 (for ``/stats``)."""

    def check_call(self, key: str) -> ApiError | None:
        """Take one batch-endpoint request for ``key``; the 429 to answer if over the RPM."""
        if self.limits.rpm is None:
            return None
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.limits.rpm, now)
        wait = bucket.wait_for(1, now)
        if wait > 0:
            return self._refuse(f"batch API requests per minute ({self.limits.rpm})", wait)
        bucket.take(1, now)
        return None

    def check_queue(self, *, queued: int, adding: int) -> ApiError | None:
        """The 429 for a batch that would take the queue over its cap, else None."""
        cap = self.limits.max_queued_requests
        if cap is None or queued + adding <= cap:
            return None
        return self._refuse(f"batch requests in the processing queue ({cap:,}; {queued:,} "
                            f"queued, this batch adds {adding:,})", 60.0)

    def reset(self) -> None:
        """Refill every bucket and zero the counter (the emulator's reset)."""
        self._buckets.clear()
        self.refused = 0

    def _refuse(self, what: str, wait_s: float) -> ApiError:
        self.refused += 1
        return ApiError("rate_limit_error", f"This request would exceed the rate limit for "
                        f"{what}; retry after the retry-after header's seconds",
                        headers={"retry-after": str(max(1, math.ceil(wait_s)))})
