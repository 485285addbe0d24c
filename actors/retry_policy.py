"""When to retry an API attempt and how long to wait: the Agent's loop is the only retry owner.

The SDK runs with ``max_retries=0`` so that every attempt passes through our limiter and lands
in the Ledger. The rules follow the SDK's own contract (``anthropic/_base_client.py``,
``docs/reliability.md`` §3) so that behaviour does not change when we take retries over:
``x-should-retry`` decides first; then ``retry-after-ms``, then ``retry-after``; else capped
exponential backoff with jitter. Statuses 408, 409, 429 and 5xx (529 included) and connection
failures are retried; other 4xx are not, nor is a spend-limit 429 (it can never succeed), nor a
stream that already delivered content (the caller has seen text that a retry would repeat).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

RETRYABLE_STATUSES = frozenset({408, 409, 429})


class RetryPolicy(BaseModel):
    """How many times and how patiently an agent retries one call.

    Example:
        >>> policy = RetryPolicy(max_retries=2)
        >>> policy.delay(retry=0, status=529, headers={"retry-after-ms": "300"})
        0.3
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(default=4, ge=0)
    """Retries after the first attempt."""
    initial_delay_s: float = Field(default=0.5, gt=0)
    """Backoff of the first retry when the server gives no hint."""
    max_delay_s: float = Field(default=8.0, gt=0)
    """Cap of the exponential backoff."""
    jitter: float = Field(default=0.25, ge=0, le=1)
    """Fraction of the backoff taken off at random, to spread retries of many agents."""
    max_retry_after_s: float = Field(default=120.0, gt=0)
    """Longest server-requested wait we honour; beyond it the call fails with RateLimited."""
    max_wait_s: float = Field(default=60.0, gt=0)
    """Longest a call keeps trying once the API answered it overloaded (529/5xx), waits in
    the limiter's circuit breaker included; then it fails with ``Overloaded``."""

    def should_retry(self, *, retry: int, status: int | None, headers: Mapping[str, str],
                     error_code: str | None = None, delivered: bool = False) -> bool:
        """Decide whether the attempt that just failed is retried.

        Args:
            retry: Retries already made for this call (0 after the first attempt).
            status: The HTTP status, or None for a connection failure or timeout.
            headers: The response headers (lower-case names), empty when there was none.
            error_code: ``error.details.error_code`` of the body, when present.
            delivered: True when a stream already passed content to the caller.
        """
        if retry >= self.max_retries or delivered:
            return False
        if error_code == "enforced_spend_limit_reached":
            return False
        wait = server_retry_after(headers)
        if wait is not None and wait > self.max_retry_after_s:
            return False  # the server asks for longer than we will wait: fail with its error
        hint = headers.get("x-should-retry")
        if hint in ("true", "false"):
            return hint == "true"
        return status is None or status in RETRYABLE_STATUSES or status >= 500

    def time_left(self, overloaded_since: float | None, now: float) -> float | None:
        """Seconds of ``max_wait_s`` left since the call's first overloaded answer, or None."""
        return None if overloaded_since is None else overloaded_since + self.max_wait_s - now

    def gave_up(self, overloaded_for_s: float, attempts: int) -> str:
        """The one line a call that stayed overloaded fails with."""
        return (f"the API was overloaded for {overloaded_for_s:.0f} s; gave up after "
                f"{attempts} attempt(s) (RetryPolicy max_retries={self.max_retries}, "
                f"max_wait_s={self.max_wait_s:g})")

    def delay(self, *, retry: int, status: int | None, headers: Mapping[str, str]) -> float:
        """Seconds to wait before retry number ``retry + 1``."""
        hinted = server_retry_after(headers)
        if hinted is not None and hinted > 0:
            return min(hinted, self.max_retry_after_s)
        backoff = min(self.initial_delay_s * 2**retry, self.max_delay_s)
        return backoff * (1 - self.jitter * random.random())


def server_retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait in seconds: ``retry-after-ms`` first, then ``retry-after``."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None
