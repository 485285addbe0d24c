"""One key as a lease sees it: stock already taken from the buckets, slots, queued calls.

Everything the limiter grants a lease lands in a :class:`KeyStock` first; calls are served
from it, and what they use, refund or give back is kept here until the lease reports it. The
arithmetic lives here; :class:`~actors.limiter_lease.LimiterLease` does the waiting, the
timers and the talking.

Example:
    >>> stock = KeyStock(BucketKey(account="a1b2c3", tier="haiku"))
    >>> stock.servable(100, 50, now=0.0)
    False
    >>> [n.input_tokens for n in stock.needs([Waiter(100, 50, None), Waiter(20, 5, None)])]
    [100, 20]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from actors.limits import Amount, BucketKey, Grant, HeaderReading, KeyReport, KeyView, Need

STOCK_S = 0.2
"""Headroom: stock for this many seconds of calls at the recent rate."""
RELAXED_STOCK_S = 1.0
"""Headroom while the key is relaxed (:attr:`KeyStock.relaxed`): top-ups five times rarer."""
RELAXED_SHARE = 0.5
"""A key is relaxed while the limiter could still grant at least this share of each bucket
and of the concurrency slots."""
_RATE_WINDOW_S = 0.25
"""Calls are counted over windows this long to estimate the recent rate."""


@dataclass(eq=False)
class Waiter:
    """A call queued in the lease until the stock can serve it."""

    input_tokens: int
    output_tokens: int
    future: Any
    """The ``asyncio.Future`` its caller awaits (None in examples)."""


class KeyStock:
    """Stock, slots, queued calls and unreported changes of one key in one lease."""

    def __init__(self, key: BucketKey) -> None:
        self.key = key
        self.stock = [0.0, 0.0, 0.0]
        """Requests, input tokens, output tokens: granted to us, not used yet."""
        self.sent = [0.0, 0.0, 0.0]
        """Reserved by calls in flight: reported as used only once they are answered (or
        given up on), so the limiter's buckets refill no earlier than the server's, whose
        refill starts when a request *arrives*, after we took its permit (issue 8's 429)."""
        self.spare_slots = 0
        self.inflight = 0
        self.waiters: deque[Waiter] = deque()
        self.fetching = False
        """A grant request for this key is in flight (there is never more than one)."""
        self.topping_up = False
        """A top-up for this key rides on the next (or the current) settle batch."""
        self.peak = 0
        """Most calls in flight at once since the slots last went back: spare slots are kept
        up to that many, so a process's next wave of calls needs no grant request for them."""
        self.view: KeyView | None = None
        self.paused_until = 0.0
        self.pause_timer: Any = None
        self.last_active = 0.0
        self.topup_at = 0.0
        """No stock top-up before then (set when the limiter last had none to give)."""
        self.typical: tuple[float, float] | None = None
        """Moving average of (input, output) tokens per call: sizes the headroom."""
        self.rate = 0.0
        """Calls per second lately."""
        self._window = (0.0, 0)
        self._reported_sent = (0.0, 0.0, 0.0)
        """``sent`` as of the last report: a change is news for the limiter's header check."""
        # Changes not reported yet, cleared by ``report``:
        self.used = [0.0, 0.0, 0.0]
        self.returned = [0.0, 0.0, 0.0]
        self.charged = [0.0, 0.0, 0.0]
        self.released = 0
        self.answered = 0
        self.headers: tuple[HeaderReading, float] | None = None
        self.retry_after: tuple[float, float] | None = None
        self.overloaded = 0
        self.last_answer_sent = -math.inf
        """When the latest-sent call that was answered took its permit (persists)."""
        self.streak: list[float] = []
        """When the overloaded calls sent after that one took their permits (persists)."""
        self.streak_reported = 0
        self.streak_broken = False
        self.report_answer_sent = -math.inf
        """When the latest-sent call answered since the last report took its permit."""
        self.overload_retry_after: float | None = None
        self.overloads_noted = 0
        """Overloaded answers this lease has settled for the key, ever."""
        self.overloads_heard = 0
        """Of those, the ones the limiter had counted by its last answer to a report: a retry
        after an overloaded answer waits until this catches up (``LimiterLease.reserve``)."""

    # -- questions ---------------------------------------------------------------------------

    @property
    def contended(self) -> bool:
        """Other processes are waiting for this key (as of our last word from the limiter)."""
        return self.view is not None and self.view.waiting_others > 0

    @property
    def probing(self) -> bool:
        """Since a 429 the limiter lets one call out at a time: keep no stock."""
        return self.view is not None and self.view.probing

    @property
    def relaxed(self) -> bool:
        """Far from its limits and nobody waiting, as of our last word from the limiter: no
        other process can need our refunds before a slower report reaches it."""
        view = self.view
        return (view is not None and view.idle_share >= RELAXED_SHARE and not view.waiting_others
                and not view.probing and not view.paused_for_s and not self.overloaded)

    def holds_anything(self) -> bool:
        return bool(self.inflight or self.spare_slots or any(self.stock) or self.waiters)

    def unreported(self) -> bool:
        return bool(any(self.used) or any(self.returned) or any(self.charged) or self.released
                    or self.headers or self.retry_after or self.answered or self.overloaded
                    or tuple(self.sent) != self._reported_sent)

    def servable(self, input_tokens: int, output_tokens: int, now: float) -> bool:
        stock = self.stock
        return (self.spare_slots > 0 and stock[0] >= 1 and stock[1] >= input_tokens
                and stock[2] >= output_tokens and now >= self.paused_until)

    def too_big(self, input_tokens: int, output_tokens: int) -> str | None:
        """Why a call can never be granted (larger than a bucket), if we know the limits."""
        if self.view is None:
            return None  # the limiter checks our first request
        limits = self.view.limits
        for amount, cap, what in ((input_tokens, limits.itpm, "input tokens"),
                                  (output_tokens, limits.otpm, "output tokens")):
            if amount > cap:
                return (f"{self.key.tier}: the request needs {amount:,} {what} but the limit "
                        f"is {cap:,}/min; make it smaller or raise the tier's limit")
        return None

    def needs(self, waiters: list[Waiter]) -> list[Need]:
        """What each queued call lacks, in order, once the stock is shared out among them."""
        stock, spare, needs = list(self.stock), self.spare_slots, []
        for waiter in waiters:
            lack = []
            for i, amount in enumerate((1, waiter.input_tokens, waiter.output_tokens)):
                lack.append(max(0, math.ceil(amount - stock[i])))
                stock[i] = max(0.0, stock[i] - amount)
            needs.append(Need(request=lack[0] > 0, input_tokens=lack[1],
                              output_tokens=lack[2], slot=spare <= 0))
            spare -= 1
        return needs

    def headroom(self, now: float, batch: int, idle_ttl: float) -> Amount:
        """Stock to ask for beyond the queued calls, while nobody else waits.

        Enough for ``STOCK_S`` of calls at the recent rate (``RELAXED_STOCK_S`` while the key
        is relaxed; ``batch`` calls at least), asked for once the stock is under half of that:
        a busy process asks about ten times a second whatever its rate (twice, relaxed), and
        the limiter caps what one stock may take.
        """
        if self.typical is None or self.contended or now > self.last_active + idle_ttl:
            return Amount()
        calls = max(batch, math.ceil(self.rate * (RELAXED_STOCK_S if self.relaxed else STOCK_S)))
        target = (calls, calls * self.typical[0], calls * self.typical[1])
        if all(s >= t / 2 for s, t in zip(self.stock, target, strict=True)):
            return Amount()
        return Amount.of([max(0.0, t - s) for s, t in zip(self.stock, target, strict=True)])

    # -- moves -------------------------------------------------------------------------------

    def note_call(self, input_tokens: int, output_tokens: int, now: float) -> None:
        """A call asked for a permit: remember its size and that we are active."""
        self.last_active = now
        if self.typical is None:
            self.typical = (float(input_tokens), float(output_tokens))
        else:
            self.typical = (0.8 * self.typical[0] + 0.2 * input_tokens,
                            0.8 * self.typical[1] + 0.2 * output_tokens)

    def take(self, input_tokens: int, output_tokens: int, now: float) -> None:
        """Serve a call from stock: it holds a slot and its reservation is in flight."""
        for i, amount in enumerate((1, input_tokens, output_tokens)):
            self.stock[i] -= amount
            self.sent[i] += amount
        self.spare_slots -= 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        started, calls = self._window
        if now >= started + _RATE_WINDOW_S:
            measured = calls / max(now - started, _RATE_WINDOW_S)
            self.rate = measured if self.rate == 0 else (self.rate + measured) / 2
            started, calls = now, 0
        self._window = (started, calls + 1)

    def put_back(self, input_tokens: int, output_tokens: int) -> None:
        """Undo ``take`` for a call that never started (its caller was cancelled)."""
        for i, amount in enumerate((1, input_tokens, output_tokens)):
            self.stock[i] += amount
            self.sent[i] -= amount
        self.inflight -= 1
        self.spare_slots += 1

    def answered_call(self, sent: float) -> None:
        """A call that took its permit at ``sent`` was answered: it ends the overloaded
        streak (the cluster's too), unless every overloaded call in it was sent after this
        one; those sent after it start the streak again."""
        self.answered += 1
        self.last_answer_sent = max(self.last_answer_sent, sent)
        self.report_answer_sent = max(self.report_answer_sent, sent)
        kept = [t for t in self.streak if t > sent] if self.streak else self.streak
        if not kept or len(kept) < len(self.streak):
            self.streak, self.streak_reported, self.streak_broken = kept, 0, True

    def overloaded_call(self, sent: float) -> None:
        """A call that took its permit at ``sent`` was answered overloaded (529/5xx)."""
        self.overloaded += 1
        self.overloads_noted += 1
        if sent > self.last_answer_sent:
            self.streak.append(sent)

    def landed(self, input_tokens: int, output_tokens: int) -> None:
        """A call in flight was answered or given up on: its reservation is used."""
        for i, amount in enumerate((1, input_tokens, output_tokens)):
            self.sent[i] -= amount
            self.used[i] += amount

    def refund(self, reserved: tuple[int, int], actual: tuple[int, int]) -> None:
        """Settle a call: keep what it over-reserved in stock, owe what it under-reserved."""
        for i, spent, real in ((1, reserved[0], actual[0]), (2, reserved[1], actual[1])):
            if real <= spent:  # ours already, taken from the buckets: keep it for later calls
                self.stock[i] += spent - real
                self.used[i] -= spent - real
            else:
                self.charged[i] += real - spent

    def add(self, grant: Grant, needs: list[Need]) -> None:
        """Put a grant's share into stock: the granted prefix of ``needs``, then the extra."""
        for need in needs[:grant.granted]:
            for i, amount in enumerate((need.request, need.input_tokens, need.output_tokens)):
                self.stock[i] += amount
            self.spare_slots += need.slot
        self.add_extra(grant.extra)

    def add_extra(self, extra: Amount) -> None:
        """Put headroom (a grant's ``extra``, a settle's top-up) into stock."""
        for i, amount in enumerate(extra.as_tuple()):
            self.stock[i] += amount

    def give_back(self) -> None:
        """Return all stock and spare slots to the buckets.

        Also while calls are queued here: a lease that kept slots for its own queue while that
        queue waited behind another lease's request for a slot would deadlock the two. Queued
        calls ask again, in turn.
        """
        for i in range(3):
            self.returned[i] += self.stock[i]
            self.stock[i] = 0.0
        self.released += self.spare_slots
        self.spare_slots = 0
        self.peak = self.inflight

    def forget_stock(self) -> None:
        """The limiter registered us afresh: our stock (and its unreported use) is gone; slots
        stay, since we told it about them."""
        self.stock = [0.0, 0.0, 0.0]
        self.used, self.returned = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]

    def see(self, view: KeyView, now: float) -> None:
        self.view = view
        if view.paused_for_s > 0:
            self.paused_until = max(self.paused_until, now + view.paused_for_s)

    def report(self, now: float) -> KeyReport:
        """The changes since the last report (which this clears)."""
        headers = retry = None
        if self.headers is not None:
            reading, seen = self.headers
            headers = reading.model_copy(update={"age_s": max(0.0, now - seen)})
        if self.retry_after is not None:
            pause, seen = self.retry_after
            retry = max(0.0, pause - (now - seen))
        trailing = self.streak[self.streak_reported:]
        report = KeyReport(key=self.key, used=Amount.of(self.used),
                           returned=Amount.of(self.returned), charged=Amount.of(self.charged),
                           in_flight=Amount.of([max(0.0, x) for x in self.sent]),
                           released_slots=self.released, headers=headers, retry_after_s=retry,
                           answered=self.answered, overloaded=self.overloaded,
                           overloaded_trailing=len(self.streak) - self.streak_reported,
                           answers_break_streak=self.streak_broken,
                           answered_age_s=_age(now, self.report_answer_sent),
                           overloaded_age_s=_age(now, min(trailing, default=-math.inf)),
                           overload_retry_after_s=self.overload_retry_after)
        self.used, self.returned, self.charged = [0.0] * 3, [0.0] * 3, [0.0] * 3
        self.released, self.headers, self.retry_after, self.answered = 0, None, None, 0
        self.overloaded, self.overload_retry_after = 0, None
        self.streak_reported, self.streak_broken = len(self.streak), False
        self.report_answer_sent = -math.inf
        self._reported_sent = tuple(self.sent)
        return report

    def __repr__(self) -> str:
        return (f"{self.key.tier}: {self.inflight} in flight, {len(self.waiters)} waiting, "
                f"stock {self.stock[0]:.0f} req/{self.stock[1]:.0f} in/{self.stock[2]:.0f} out")


def _age(now: float, sent: float) -> float | None:
    """How long ago ``sent`` was, None if never (-inf)."""
    return None if sent == -math.inf else max(0.0, now - sent)
