"""The per-key circuit breaker: repeated overloaded answers (529/5xx) slow the whole cluster.

A 429 says "you, slow down" and comes with a ``retry-after``; a 529 says "the API is
struggling" and usually does not. Retrying each call on its own backoff keeps the cluster
sending at most of its normal rate into an outage (issue 12, D16: 78 %). So the limiter
counts overloaded answers per key across all leases and, after ``OPEN_AFTER`` in a row,
opens the breaker: a pause with capped exponential backoff (or the server's ``retry-after``
when longer), then one probe at a time (the limiter's 429 probing). A failed probe reopens it
with twice the pause; a probe that gets through closes it half-way: concurrency restarts at
``RAMP_START`` and grows by one per answered call (TCP's slow start: it doubles per round of
answers) back to the limit, so the recovering API does not get every waiter at once.
"""

from __future__ import annotations

OPEN_AFTER = 8
"""Overloaded answers in a row, cluster-wide, that open the breaker. "In a row" is in the
order calls were sent, where random faults are independent: at drill D1's 30 % transient
529/500 rate, five in a row come about every 400 calls (a 400-call run paused in 4 of 12
simulated seeds), eight every 15,000; an outage gives as many as there are calls in flight
at once (its first wave), and a few more within a retry's backoff."""
FIRST_PAUSE_S, MAX_PAUSE_S = 1.0, 16.0
"""The first pause, doubled by every failed probe up to the cap."""
RAMP_START = 1
"""Calls allowed in flight right after a probe got through."""


class Breaker:
    """One key's breaker state; the RateLimiter applies the pauses it returns."""

    def __init__(self) -> None:
        self.streak = 0
        """Overloaded answers since the last answered call."""
        self.since: float | None = None
        """When the earliest-sent of those was sent (the limiter's clock), None: unknown."""
        self.pause_s = 0.0
        """The last pause; 0 once the ramp is over (the next opening starts small again)."""
        self.ramp: int | None = None
        """Concurrency allowed while ramping up after a probe got through, else None."""

    def overloaded(self, count: int, retry_after_s: float | None, probe_failed: bool,
                   sent_at: float | None = None) -> float | None:
        """Note ``count`` overloaded answers, the earliest sent at ``sent_at``; return the
        pause to start if the breaker opens."""
        if sent_at is not None:
            self.since = sent_at if self.since is None or not self.streak else \
                min(self.since, sent_at)
        self.streak += count
        if not probe_failed and self.streak < OPEN_AFTER:
            return None
        self.streak, self.ramp, self.since = 0, None, None
        self.pause_s = FIRST_PAUSE_S if not self.pause_s else min(MAX_PAUSE_S, self.pause_s * 2)
        return max(self.pause_s, retry_after_s or 0.0)

    def answered(self, count: int, probe_passed: bool, limit: int,
                 ends_streak: bool = True, sent_at: float | None = None) -> None:
        """Note ``count`` answered calls, the latest sent at ``sent_at``: the probe's starts
        the ramp, later ones grow it; they end the streak unless all were sent before the
        overloaded calls it counts (told by their lease, or by the send times: another
        process's reply to a call sent before an outage lands after its first 529s)."""
        if ends_streak and not (sent_at is not None and self.since is not None
                                and sent_at < self.since):
            self.streak, self.since = 0, None
        if probe_passed and self.pause_s:
            self.ramp = RAMP_START
        elif self.ramp is not None:
            self.ramp += count
            if self.ramp >= limit:
                self.ramp, self.pause_s = None, 0.0

    def concurrency(self, limit: int) -> int:
        """Calls allowed in flight: the limit, or less while ramping up."""
        return limit if self.ramp is None else min(limit, self.ramp)
