"""The cluster-wide rate limiter: one named actor keeps every process under one key's limits.

Per :class:`~actors.limits.BucketKey` it keeps three continuously refilled buckets (requests,
input tokens, output tokens per minute; capacity = the limit, refill = limit/60 per second)
and a concurrency cap. Processes never call it per request: each holds a
:class:`~actors.limiter_lease.LimiterLease` that fetches grants in batches into a local stock
and reports usage in batches (docs/ray-facts.md §2: one RPC per call tops out near 1k pairs/s).

Why not ``aiolimiter``: its ``AsyncLimiter`` waits for one amount on the local loop and has no
way to take several buckets at once, refund, run negative after a late charge, expose its level
for header correction, or count stock parked in other processes. What this module does keep
from ``leakybucket.py`` is its shape: one future per waiter, one timer per bucket re-armed on
every change, cancelled waiters skipped, levels recomputed lazily from a replaceable clock.

Invariants, per key (``level`` is what the limiter can still grant, ``held`` what sits unused
in lease stocks):

* ``level + held <= capacity`` at all times, so hoarded stock cannot outlive the bucket it came
  from; grants in any window of ``w`` seconds are at most ``capacity + refill * w``.
* A slot is granted only while ``in_use`` (slots held by live leases) is below
  ``max_concurrency``; slots that leases re-register after a restart count even above it.
* A grant waits in its job's FIFO queue, and jobs take turns (start-time fair queueing by each
  need's largest share of a bucket, :mod:`actors.limiter_fair`): while several jobs wait,
  each gets an equal share of the limit that binds, however many requests the others park.
  The waiter whose turn it is blocks everything behind it, so a large request is never
  starved by small ones. A request larger than a bucket is refused at once.
* A 429 pauses the key for everyone for its ``retry-after``; then one call (the probe) is
  granted at a time until the server answers one, and leases hold no stock meanwhile.
* Five overloaded answers (529/5xx) in a row open the key's circuit breaker: the same pause
  and probe, with a backoff that doubles per failed probe, then a ramp-up of the concurrency
  (:mod:`actors.limiter_breaker`).
* Leases expire ``lease_ttl_s`` after their last call; their slots and stock return.
* Waiting is a future, never an occupied loop: settles always get through (docs/ray-facts.md §2's
  measured deadlock), and a lease parks at most one grant request per key.

Example:
    >>> limiter = get_rate_limiter(TierLimits(rpm=50, itpm=30_000, otpm=8_000,
    ...                            max_concurrency=8), namespace="demo")   # doctest: +SKIP
    >>> ray.get(limiter.status.remote()).buckets                          # doctest: +SKIP
    []
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict
from ray.util.metrics import Counter, Gauge, Histogram
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.limiter_buckets import Cancellable, Clock, KeyBuckets, LoopClock, amounts
from actors.limiter_fair import dominant_cost
from actors.limits import (
    Amount,
    BucketKey,
    Grant,
    GrantRequest,
    KeyReport,
    KeyView,
    Need,
    SettleBatch,
    SettleReply,
    TierLimits,
    TopUp,
)
from actors.tiers import Tier

LIMITER_NAME = "rate_limiter"
"""The singleton's actor name in its namespace."""
DEFAULT_LEASE_TTL_S = 6.0
"""A lease not heard from for this long is dead: its slots and stock return to the buckets."""

_EXTRA_SHARE = 0.25
"""Headroom for a lease's stock takes at most this share of what a bucket has left, so one
process cannot drain a bucket into its stock while others have yet to ask."""
_WAIT_BOUNDS = [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60]
PROBE_TIMEOUT_S = 5.0
"""After a 429 pause one probe goes out; with no answer in this long, the next one does."""


class BucketStatus(BaseModel):
    """One key's live state, for tests, the CLI and humans."""

    model_config = ConfigDict(frozen=True)

    key: BucketKey
    limits: TierLimits
    available: Amount
    """What the buckets can grant now (negative after a late charge)."""
    held: Amount
    """Granted into lease stocks and not used yet."""
    in_use: int
    waiting: int
    paused_for_s: float
    probing: bool = False
    """One call at a time since a 429, until the server answers one."""


class LimiterStatus(BaseModel):
    """The limiter's live state: which incarnation answers, its leases and its buckets."""

    model_config = ConfigDict(frozen=True)

    incarnation: str
    restarted: bool
    pid: int
    """The process serving it (operators find and watch it by this)."""
    leases: int
    buckets: list[BucketStatus]
    grant_requests: int = 0
    """``acquire`` calls served by this process: with ``settle_batches``, the RPCs leases make."""
    settle_batches: int = 0
    """``settle`` calls served by this process."""


@dataclass(eq=False)
class _Lease:
    """What the limiter knows of one registered lease."""

    lease_id: str
    session: str
    expires_at: float
    last_seq: int
    job: str
    """The Ray job the lease's process belongs to: the unit of fairness."""
    slots: dict[BucketKey, int] = field(default_factory=dict)
    held: dict[BucketKey, list[float]] = field(default_factory=dict)
    in_flight: dict[BucketKey, list[float]] = field(default_factory=dict)
    """The part of ``held`` that its calls in flight reserved, as of its last report."""
    acquires: dict[BucketKey, tuple[int, asyncio.Future[Grant]]] = field(default_factory=dict)
    topped_up: tuple[int, list[TopUp]] = (0, [])
    """The last settle batch's ``seq`` and the top-ups granted with it, for a re-send."""


@dataclass(eq=False)
class _Waiter:
    lease: _Lease
    needs: list[Need]
    extra: Amount
    future: asyncio.Future[Grant]
    since: float


class RateLimiter:
    """The cluster's one rate limiter; make it an actor with :func:`get_rate_limiter`.

    Its callers are leases (:class:`~actors.limiter_lease.LimiterLease`), which speak
    :class:`~actors.limits.GrantRequest` and :class:`~actors.limits.SettleBatch`. A limiter
    that Ray restarts starts with EMPTY buckets (it cannot know what was spent in the last
    minute) and grants no concurrency slot until every live lease has had time to re-register
    the slots it still holds.

    Example:
        >>> limiter = get_rate_limiter(TierLimits(rpm=50, itpm=30_000, otpm=8_000,
        ...                            max_concurrency=8))                 # doctest: +SKIP
        >>> await limiter.set_limits.remote("opus", TierLimits(...))       # doctest: +SKIP
    """

    def __init__(self, default_limits: TierLimits,
                 per_tier: Mapping[Tier, TierLimits] | None = None, *,
                 lease_ttl_s: float = DEFAULT_LEASE_TTL_S, clock: Clock | None = None,
                 restarted: bool | None = None) -> None:
        self._clock: Clock = clock or LoopClock()
        self._defaults, self._per_tier = default_limits, dict(per_tier or {})
        self.lease_ttl_s = lease_ttl_s
        self.incarnation = uuid.uuid4().hex[:8]
        self.restarted = _was_restarted() if restarted is None else restarted
        self._started = self._clock.now()
        # Leases renew every ttl/4 at the latest; after a restart, wait that long (and a bit)
        # for them to re-register their slots before granting any new one.
        self._grace_until = self._started + (lease_ttl_s / 3 if self.restarted else 0.0)
        self._sessions = itertools.count(1)
        self._buckets: dict[BucketKey, KeyBuckets] = {}
        self._leases: dict[str, _Lease] = {}
        self._expiry: tuple[float, Cancellable] | None = None
        self._metrics = _metrics()
        self._address = _actor_address()
        self._served = {"grant_requests": 0, "settle_batches": 0}

    def __repr__(self) -> str:
        busy = sum(b.in_use for b in self._buckets.values())
        waiting = sum(len(b.waiters) for b in self._buckets.values())
        return (f"RateLimiter({self.incarnation}{', restarted' if self.restarted else ''}: "
                f"{len(self._buckets)} buckets, {len(self._leases)} leases, {busy} in flight, "
                f"{waiting} waiting)")

    # -- the protocol ----------------------------------------------------------------------

    async def acquire(self, request: GrantRequest) -> Grant:
        """Grant the longest prefix of ``request.needs`` that fits, waiting (FIFO) for one.

        Example:
            >>> grant = await limiter.acquire.remote(GrantRequest(
            ...     lease_id=lid, session=s, seq=1, key=key, needs=[Need(input_tokens=900,
            ...     output_tokens=1024)]))                                  # doctest: +SKIP
        """
        self._served["grant_requests"] += 1
        now = self._clock.now()
        lease = self._leases.get(request.lease_id)
        if lease is None or lease.session != request.session:
            return Grant(session=None)  # the lease must register with a settle first
        self._renew(lease, now)
        state = self._bucket(request.key)
        previous = lease.acquires.get(request.key)
        if previous is not None and previous[0] == request.seq:
            return await asyncio.shield(previous[1])  # a retry of a call we already have
        if previous is not None and not previous[1].done():
            previous[1].cancel()  # its caller gave up on it: never grant into the void
        needs, rejected = self._admissible(state, request.needs)
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        lease.acquires[request.key] = (request.seq, future)  # remembered for retries
        if not needs:  # refused, or headroom only: never waits, never jumps the queue
            state.refill(now)
            extra = Amount() if rejected or self._has_waiters(state) else \
                self._extra(state, lease, request.extra, now)
            future.set_result(Grant(session=lease.session, extra=extra, rejected=rejected,
                                    view=self._view(state, lease)))
            return future.result()
        state.waiters.push(lease.job, _Waiter(lease, needs, request.extra, future, now))
        self._dispatch(state)
        return await future

    async def settle(self, batch: SettleBatch) -> SettleReply:
        """Apply a lease's batched report, renew it (or register it) and tell it what to know.

        Idempotent: a batch whose ``seq`` was applied already changes nothing.

        Example:
            >>> reply = await limiter.settle.remote(SettleBatch(lease_id=lid, session=None,
            ...                                      seq=1))                # doctest: +SKIP
        """
        self._served["settle_batches"] += 1
        now, fresh = self._clock.now(), True
        lease = self._leases.get(batch.lease_id)
        if lease is None or lease.session != batch.session:
            if lease is not None:
                self._forget(lease)
            lease = self._register(batch, now)
            for report in batch.reports:  # stock and slots of the old session are gone
                self._apply_outside(self._bucket(report.key), report, now)
        elif batch.seq > lease.last_seq:
            lease.last_seq = batch.seq
            for report in batch.reports:
                self._apply(lease, report, now)
        else:
            fresh = False
        self._renew(lease, now)
        extras = self._top_ups(lease, batch, now, fresh)
        keys = {r.key for r in batch.reports} | set(lease.slots) | set(lease.held)
        views = [self._view(self._bucket(k), lease) for k in keys]
        if batch.closing:
            self._forget(lease)
        for key in keys:
            self._dispatch(self._bucket(key))
        return SettleReply(session=lease.session, lease_ttl_s=self.lease_ttl_s, views=views,
                           name=self._address[0], namespace=self._address[1], extras=extras)

    async def set_limits(self, tier: Tier, limits: TierLimits) -> None:
        """Change one tier's limits for every account, now and for buckets made later.

        Example:
            >>> await limiter.set_limits.remote("opus", TierLimits(rpm=20, itpm=10_000,
            ...                                 otpm=2_000, max_concurrency=4))  # doctest: +SKIP
        """
        self._per_tier[tier] = limits
        now = self._clock.now()
        for state in [b for b in self._buckets.values() if b.key.tier == tier]:
            state.refill(now)
            state.limits = limits
            state.clamp()
            for waiter in list(state.waiters):
                waiter.needs, rejected = self._admissible(state, waiter.needs)
                if not waiter.needs and not waiter.future.done():
                    state.waiters.remove(waiter)
                    waiter.future.set_result(Grant(session=waiter.lease.session,
                                                   rejected=rejected,
                                                   view=self._view(state, waiter.lease)))
            self._dispatch(state)

    async def status(self) -> LimiterStatus:
        """The live state of every bucket (never a key: accounts are fingerprints)."""
        now = self._clock.now()
        buckets = []
        for state in self._buckets.values():
            state.refill(now)
            buckets.append(BucketStatus(
                key=state.key, limits=state.limits, available=Amount.of(state.level),
                held=Amount.of(state.held), in_use=state.in_use,
                waiting=sum(len(w.needs) for w in state.waiters if not w.future.done()),
                paused_for_s=max(0.0, state.paused_until - now), probing=state.probing))
        return LimiterStatus(incarnation=self.incarnation, restarted=self.restarted,
                             pid=os.getpid(), leases=len(self._leases), buckets=buckets,
                             **self._served)

    # -- granting ----------------------------------------------------------------------------

    def _dispatch(self, state: KeyBuckets) -> None:
        """Serve the queue head while it fits; else arm one timer for when it will."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        now = self._clock.now()
        state.refill(now)
        while (waiter := state.waiters.turn(_dead)) is not None:
            wake_at = state.blocked_until(waiter.needs[0], now, self._grace_until)
            if wake_at is not None:
                if wake_at < math.inf:
                    state.timer = self._clock.call_at(wake_at, partial(self._dispatch, state))
                break
            self._grant(state, waiter, now)
        depth = sum(len(w.needs) for w in state.waiters)
        if depth != state.depth_shown:  # a metric update costs more than this whole settle
            state.depth_shown = depth
            self._metrics.depth.set(depth, tags={"tier": state.key.tier})

    def _grant(self, state: KeyBuckets, waiter: _Waiter, now: float) -> None:
        """Grant the waiter the prefix of its needs that fits and its job's turn allows."""
        granted, spent = 0, 0.0
        allowance = state.waiters.allowance(waiter)
        for need in waiter.needs:
            if granted and (spent > allowance - 1e-9  # another job's turn
                            or state.blocked_until(need, now, self._grace_until) is not None):
                break
            spent += dominant_cost(need, state.limits)
            if state.probing:  # the one call that asks the server whether the storm is over
                state.probe_until = now + PROBE_TIMEOUT_S
            state.move_to_stock(waiter.lease.held.setdefault(state.key, [0.0, 0.0, 0.0]),
                                amounts(need))
            if need.slot:
                state.in_use += 1
                waiter.lease.slots[state.key] = waiter.lease.slots.get(state.key, 0) + 1
            granted += 1
            if state.probing:
                break
        state.waiters.served(waiter, spent)
        whole = granted == len(waiter.needs) and not self._has_waiters(state)
        extra = self._extra(state, waiter.lease, waiter.extra, now) if whole else Amount()
        tags = {"tier": state.key.tier}
        self._metrics.wait.observe(now - waiter.since, tags=tags)
        self._metrics.grants.inc(granted + extra.requests, tags=tags)  # calls, stock
        waiter.future.set_result(Grant(session=waiter.lease.session, granted=granted,
                                       extra=extra, view=self._view(state, waiter.lease)))

    def _extra(self, state: KeyBuckets, lease: _Lease, asked: Amount, now: float) -> Amount:
        """Headroom for a lease's stock, from idle capacity only (see ``_EXTRA_SHARE``)."""
        if not asked or now < state.paused_until or state.probing:
            return Amount()
        give = [float(math.floor(min(want, max(0.0, level) * _EXTRA_SHARE)))
                for want, level in zip(asked.as_tuple(), state.level, strict=True)]
        state.move_to_stock(lease.held.setdefault(state.key, [0.0, 0.0, 0.0]), give)
        return Amount.of(give)

    def _top_ups(self, lease: _Lease, batch: SettleBatch, now: float, fresh: bool) -> list[TopUp]:
        """A settle's top-ups, granted once per batch: a batch re-sent after an ambiguous
        failure gets the first answer again, never a second grant (stock its lease would not
        know it holds, taken from the buckets until the lease ends)."""
        if batch.closing:
            return []
        if not fresh:
            seq, extras = lease.topped_up
            return extras if seq == batch.seq else []
        extras = [self._top_up(lease, t, now) for t in batch.topups]
        lease.topped_up = (batch.seq, extras)
        return extras

    def _top_up(self, lease: _Lease, topup: TopUp, now: float) -> TopUp:
        """A settle's top-up: as a grant request's headroom, never while anyone waits."""
        state = self._bucket(topup.key)
        state.refill(now)
        extra = Amount() if self._has_waiters(state) else \
            self._extra(state, lease, topup.amount, now)
        return TopUp(key=topup.key, amount=extra)

    @staticmethod
    def _admissible(state: KeyBuckets, needs: list[Need]) -> tuple[list[Need], str | None]:
        """Cut ``needs`` before the first that can never fit; say why if that is the first."""
        for i, need in enumerate(needs):
            reason = state.too_big(need)
            if reason is not None:
                return needs[:i], reason if i == 0 else None
        return needs, None

    @staticmethod
    def _has_waiters(state: KeyBuckets) -> bool:
        return any(not w.future.done() for w in state.waiters)

    # -- settling ----------------------------------------------------------------------------

    def _apply(self, lease: _Lease, report: KeyReport, now: float) -> None:
        """Move a report's stock and slots, then its charges, headers and pause."""
        state = self._bucket(report.key)
        state.refill(now)
        held = lease.held.setdefault(report.key, [0.0, 0.0, 0.0])
        for i, (used, back) in enumerate(zip(report.used.as_tuple(),
                                               report.returned.as_tuple(), strict=True)):
            delta = used + back  # negative when refunds kept in stock exceed what calls took
            if delta > held[i]:
                # A lease cannot use or return more than we granted it: trust our books.
                back, delta = max(0.0, min(back, held[i])), held[i]
            held[i] -= delta
            state.held[i] -= delta
            state.level[i] += max(0.0, back)
        state.clamp()
        state.set_in_flight(lease.in_flight.setdefault(report.key, [0.0, 0.0, 0.0]),
                            report.in_flight.as_tuple(), held)
        released = min(report.released_slots, lease.slots.get(report.key, 0))
        lease.slots[report.key] = lease.slots.get(report.key, 0) - released
        state.in_use -= released
        self._apply_outside(state, report, now)

    def _apply_outside(self, state: KeyBuckets, report: KeyReport, now: float) -> None:
        """The parts of a report that stand on their own: charges, headers, a 429 pause."""
        state.refill(now)
        for i, amount in enumerate(report.charged.as_tuple()):
            state.level[i] -= max(0.0, amount)
        if report.headers is not None:
            state.correct(report.headers)
        if report.retry_after_s is not None:
            # Pause for everyone, then send one probe; the rest wait for its answer rather
            # than all retrying at the end of the pause into the same 429 (issue 12, D2).
            self._pause(state, now + max(0.0, report.retry_after_s), self._metrics.pauses)
        elif now >= state.paused_until:
            self._count_answers(state, report, now)

    def _count_answers(self, state: KeyBuckets, report: KeyReport, now: float) -> None:
        """Feed a report's answered and overloaded calls to the key's breaker.

        Only reports that arrive while no pause is on count: overloaded answers of calls sent
        before a pause say nothing new, and the probe's own reopens the breaker at once
        (issue 12, D16). Within a lease, calls are ordered by when they were sent, not
        answered (``KeyReport.overloaded_trailing``); across leases, a report's answers end
        the streak. Counting none of a batch that held any answer, as before, missed an
        outage's whole first wave whenever a call sent just before it was answered in the
        same batch (its reply lands after the instant 529s), and every call's retry went out
        before the breaker opened (D16's 47 requests in CI).
        """
        probe_out = state.probing and state.probe_until > 0
        streak = report.overloaded_trailing
        if streak is None:
            streak = 0 if report.answered else report.overloaded
        if report.answered:
            # Answers of calls sent before the pause say nothing of the storm: only one that
            # lands once a probe went out ends it (a slow old call may pass for it, rarely),
            # and not when the lease settled an overloaded answer after it.
            probe_passed = probe_out and not streak
            if probe_passed:
                state.probing = False
            state.breaker.answered(report.answered, probe_passed, state.limits.max_concurrency,
                                   ends_streak=report.answers_break_streak,
                                   sent_at=_sent_at(now, report.answered_age_s))
        if streak:
            pause = state.breaker.overloaded(streak, report.overload_retry_after_s, probe_out,
                                             sent_at=_sent_at(now, report.overloaded_age_s))
            if pause is not None:
                self._pause(state, now + pause, self._metrics.breaker_opens)

    def _pause(self, state: KeyBuckets, until: float, counter: Counter) -> None:
        """Pause the key for everyone, then let one probe out at a time."""
        state.probing, state.probe_until = True, 0.0
        if until > state.paused_until:
            state.paused_until = until
            counter.inc(1, tags={"tier": state.key.tier})

    # -- leases ------------------------------------------------------------------------------

    def _register(self, batch: SettleBatch, now: float) -> _Lease:
        lease = _Lease(batch.lease_id, f"{self.incarnation}-{next(self._sessions)}",
                       expires_at=now + self.lease_ttl_s, last_seq=batch.seq,
                       job=batch.job or batch.lease_id)
        for holding in batch.holdings:
            # Slots a lease still holds count even above the cap: their calls are in flight.
            self._bucket(holding.key).in_use += holding.slots
            lease.slots[holding.key] = holding.slots
        self._leases[lease.lease_id] = lease
        return lease

    def _renew(self, lease: _Lease, now: float) -> None:
        lease.expires_at = now + self.lease_ttl_s
        if self._expiry is None:
            self._expiry = (lease.expires_at,
                            self._clock.call_at(lease.expires_at, self._expire_leases))

    def _expire_leases(self) -> None:
        """Forget leases not heard from for a TTL; re-arm for the next one to lapse."""
        now = self._clock.now()
        self._expiry = None
        for lease in [x for x in self._leases.values() if x.expires_at <= now]:
            keys = set(lease.slots) | set(lease.held)
            self._forget(lease)
            for key in keys:
                self._dispatch(self._bucket(key))
        if self._leases:
            first = min(x.expires_at for x in self._leases.values())
            self._expiry = (first, self._clock.call_at(first, self._expire_leases))

    def _forget(self, lease: _Lease) -> None:
        """Drop a lease: its slots come back; its unused stock is written off, never re-granted
        (it came out of the buckets, which refill in its place)."""
        self._leases.pop(lease.lease_id, None)
        for key, slots in lease.slots.items():
            self._bucket(key).in_use -= slots
        for key, held in lease.held.items():
            state = self._bucket(key)
            state.held = [a - b for a, b in zip(state.held, held, strict=True)]
            state.set_in_flight(lease.in_flight.get(key, [0.0, 0.0, 0.0]), (0.0, 0.0, 0.0),
                                [0.0, 0.0, 0.0])
        for _, future in lease.acquires.values():
            if not future.done():
                future.set_result(Grant(session=None))
        lease.slots.clear()
        lease.held.clear()
        lease.in_flight.clear()

    # -- small lookups -----------------------------------------------------------------------

    def _bucket(self, key: BucketKey) -> KeyBuckets:
        state = self._buckets.get(key)
        if state is None:
            limits = self._per_tier.get(key.tier, self._defaults)
            if self.restarted:  # empty at our start, refilled since
                state = KeyBuckets(key, limits, level=[0.0, 0.0, 0.0], stamp=self._started)
            else:
                state = KeyBuckets(key, limits, level=[float(c) for c in limits.capacity],
                                 stamp=self._clock.now())
            self._buckets[key] = state
        return state

    def _view(self, state: KeyBuckets, lease: _Lease) -> KeyView:
        others = sum(1 for w in state.waiters if w.lease is not lease and not w.future.done())
        # Slots count too: where concurrency binds (the buckets far from empty), a lease
        # keeping spare slots must hear within the flush interval that another one waits.
        slots = state.limits.max_concurrency
        idle = min(min(max(0.0, level / cap) for level, cap in zip(state.level,
                                                                   state.limits.capacity,
                                                                   strict=True)),
                   max(0.0, (slots - state.in_use) / slots))
        return KeyView(key=state.key, limits=state.limits, waiting_others=others,
                       paused_for_s=max(0.0, state.paused_until - self._clock.now()),
                       probing=state.probing or state.breaker.ramp is not None,
                       idle_share=min(1.0, idle))


def get_rate_limiter(default_limits: TierLimits,
                     per_tier: Mapping[Tier, TierLimits] | None = None,
                     namespace: str = "raytroupe", *, name: str = LIMITER_NAME,
                     lifetime: str | None = None,
                     lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> Any:
    """Get the cluster's rate limiter, creating it if it does not exist yet.

    Safe to call from many processes at once: Ray's ``get_if_exists`` makes one actor, and
    the first creator's limits win (change them later with ``set_limits``). The actor is
    soft-pinned to the head node (it must not live on a worker that can die), restarts
    forever, and takes 10,000 concurrent calls so that parked grants never block settles.

    Args:
        default_limits: Limits of every tier without an override (from cluster settings).
        per_tier: Overrides by tier. Passed to the actor as given: a mapping that reads its
            items when iterated (``cluster.runtime_info.RecordedLimits``) is read again each
            time Ray restarts the limiter, which re-runs ``__init__`` with these arguments.
        namespace: Ray namespace of the named actor; drivers sharing it share the limits.
        name: The actor's name.
        lifetime: None (dies with the creating driver) or ``"detached"``.
        lease_ttl_s: Seconds after which a silent lease's slots and stock return.

    Returns:
        The actor handle.
    """
    options: dict[str, Any] = {
        "name": name, "namespace": namespace, "get_if_exists": True, "lifetime": lifetime,
        "num_cpus": 0, "max_concurrency": 10_000, "max_restarts": -1,
        # Our leases retry with idempotent sequence numbers; Ray replaying calls on a new
        # incarnation would only hide the restart from them.
        "max_task_retries": 0,
    }
    head = _head_node_id()
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=True)
    return ray.remote(RateLimiter).options(**options).remote(
        default_limits, per_tier if per_tier is not None else {}, lease_ttl_s=lease_ttl_s)


def _dead(waiter: _Waiter) -> bool:
    """Cancelled by its caller, or its lease expired: skipped, never granted."""
    return waiter.future.done()


def _head_node_id() -> str | None:
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


def _actor_address() -> tuple[str | None, str | None]:
    """(name, namespace) of the actor running this code, or (None, None) outside one."""
    if not ray.is_initialized():
        return None, None
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return None, None
    return context.get_actor_name() or None, context.namespace


def _was_restarted() -> bool:
    """True inside an actor that Ray has restarted (its ``__init__`` is running again)."""
    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    with warnings.catch_warnings():  # it reads the deprecated ``actor_id`` inside Ray 2.60
        warnings.simplefilter("ignore")
        return context.get_actor_id() is not None and context.was_current_actor_reconstructed


class _Metrics:
    """The limiter's metrics, tagged by tier. Inert outside Ray, so tests need no switch."""

    TAG_KEYS = ("tier",)

    def __init__(self) -> None:
        self.wait = Histogram("raytroupe_limiter_wait_s",
                              "Seconds a grant request waited in the limiter's queue.",
                              boundaries=_WAIT_BOUNDS, tag_keys=self.TAG_KEYS)
        self.depth = Gauge("raytroupe_limiter_queue_depth",
                           "Calls waiting for a grant in the limiter.", tag_keys=self.TAG_KEYS)
        self.grants = Counter("raytroupe_limiter_grants",
                              "Request permits granted (calls and stock).",
                              tag_keys=self.TAG_KEYS)
        self.pauses = Counter("raytroupe_limiter_429_pauses",
                              "Cluster-wide pauses after a 429.", tag_keys=self.TAG_KEYS)
        self.breaker_opens = Counter("raytroupe_limiter_breaker_opens",
                                     "Cluster-wide pauses after repeated overloaded answers.",
                                     tag_keys=self.TAG_KEYS)


@cache
def _metrics() -> _Metrics:
    return _Metrics()


def _sent_at(now: float, age_s: float | None) -> float | None:
    """A lease's "sent ``age_s`` before this report" on our clock (its own is not ours)."""
    return None if age_s is None else now - age_s
