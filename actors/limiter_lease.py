"""A process's window onto the cluster's RateLimiter: grants in batches, a local stock, no RPC
per call.

Everything the limiter grants lands in this lease's stock, already taken from the cluster's
buckets, so serving a call from stock never lets the cluster exceed a limit. Calls queue here
first come, first served; when the stock cannot serve the first, one grant request (per key)
asks the limiter for the needs of the queued calls plus some headroom. Usage goes back in
batches every ``flush_interval_s``, which also renews the lease; stock for calls to come
(a top-up, when the stock runs low and no call waits) rides on such a batch
rather than costing a grant request of its own. A busy process thus talks to the limiter
at most about 20 times a second whatever its call rate, and about 4 times while far from every
limit (``RELAXED_FLUSH_S``; ``docs/performance.md``). Stock and spare
slots go back after ``idle_ttl_s`` without calls, or at once when other processes are waiting
for them.

The per-key arithmetic (stock, needs, headroom, reports) is :class:`~actors.limiter_stock.
KeyStock`; this module waits, keeps time and talks to the limiter.

Example::

    lease = LimiterLease(limiter)                                  # one per process
    key = BucketKey(account="a1b2c3", tier="sonnet")
    async with lease.reserve(key, input_tokens=900, output_tokens=1024) as permit:
        response = await send()
        permit.settle(input_tokens=812, output_tokens=240, headers=response.headers)
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError

from actors.errors import ConfigError
from actors.limiter_buckets import Clock, LoopClock
from actors.limiter_stock import KeyStock, Waiter
from actors.limits import (
    Amount,
    BucketKey,
    Grant,
    GrantRequest,
    HeaderReading,
    Holding,
    KeyView,
    Need,
    SettleBatch,
    SettleReply,
    TopUp,
)
from actors.ratelimiter import DEFAULT_LEASE_TTL_S
from actors.singletons import Singleton

DEFAULT_PAUSE_S = 1.0
"""How long a 429 without ``retry-after`` pauses its bucket."""
RELAXED_FLUSH_S = 0.25
"""Report interval while every key is relaxed (``KeyStock.relaxed``: far from its limits,
nobody waiting): nobody can need the refunds sooner, and each report costs the limiter ~1 ms
of CPU. Anything that matters to others (a 429, an overloaded answer, a probe's answer,
stock others wait for, a top-up) still goes out within ``flush_interval_s`` or at once."""


class Permit:
    """One call's reservation. Tell it what the call really used, or that it got a 429.

    Leaving the ``reserve`` block without either keeps the whole reservation spent (the call
    may have been billed) and frees the concurrency slot.
    """

    __slots__ = ("_done", "_landed", "_lease", "_sent", "_stock", "input_tokens",
                 "output_tokens")

    def __init__(self, lease: LimiterLease, stock: KeyStock, input_tokens: int,
                 output_tokens: int, sent: float) -> None:
        self._lease, self._stock, self._sent = lease, stock, sent
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        self._done = self._landed = False

    def __repr__(self) -> str:
        return (f"Permit({self._stock.key.tier}, in={self.input_tokens}, "
                f"out={self.output_tokens}{', settled' if self._done else ''})")

    def settle(self, *, input_tokens: int, output_tokens: int,
               headers: Mapping[str, str] | None = None) -> None:
        """Record real usage: refund what was over-reserved, charge what was under.

        Args:
            input_tokens: Tokens that count toward the input limit (``limited_input_tokens``:
                uncached input plus cache writes, not cache reads).
            output_tokens: Output tokens the call produced.
            headers: The response's headers; their ``anthropic-ratelimit-*-remaining`` values
                correct the cluster's buckets when the server knows of more usage than we do.
        """
        if not self._done:
            self._done = True
            self._lease._settled(self, input_tokens, output_tokens, headers)

    def rate_limited(self, *, retry_after_s: float | None = None,
                     headers: Mapping[str, str] | None = None) -> None:
        """Report a 429: the bucket pauses cluster-wide for ``retry_after_s`` (1 s if unknown),
        then lets one call (the probe) out at a time until the server answers one.

        The reservation stays spent.
        """
        if not self._done:
            self._done = True
            self._lease._rate_limited(self, retry_after_s, headers)

    def overloaded(self, *, retry_after_s: float | None = None,
                   headers: Mapping[str, str] | None = None) -> None:
        """Report a 529/5xx answer: nothing is charged but the request, and the limiter counts
        it toward the key's circuit breaker (``actors/limiter_breaker.py``), in the next batch.
        """
        if not self._done:
            self._done = True
            self._lease._settled(self, 0, 0, headers, overloaded=True, retry_after_s=retry_after_s)


class LimiterLease:
    """The per-process client of the RateLimiter actor; one per process (an Agent holds one).

    Args:
        limiter: The RateLimiter as a :class:`~actors.singletons.Singleton` (found again by
            name if it dies), or a bare handle (:func:`~actors.ratelimiter.get_rate_limiter`).
        batch_size: Most calls asked for in one grant request, headroom in calls, and spare
            slots kept at least (more while more calls were in flight at once).
        flush_interval_s: Longest a settle waits before it is reported (``RELAXED_FLUSH_S``
            while every key is far from its limits and nobody waits).
        idle_ttl_s: Unused stock and spare slots go back after this long without a call.
        give_up_after_s: How long to retry a limiter that cannot be reached before raising.
        clock: Time source and timers (tests pass a fake one).
        job: Whose share this lease draws from when several jobs wait for one limit; by
            default the Ray job of this process (an actor's is its creator's: the driver).
    """

    def __init__(self, limiter: Any, *, batch_size: int = 16, flush_interval_s: float = 0.05,
                 idle_ttl_s: float = 1.0, give_up_after_s: float = 120.0,
                 clock: Clock | None = None, job: str | None = None) -> None:
        self._limiter = limiter if isinstance(limiter, Singleton) else \
            Singleton(None, None, handle=limiter, give_up_after_s=give_up_after_s)
        self.lease_id = uuid.uuid4().hex
        self.job = job if job is not None else _ray_job_id()
        self._batch, self._flush_interval = batch_size, flush_interval_s
        self._idle_ttl, self._give_up_after = idle_ttl_s, give_up_after_s
        self._clock: Clock = clock or LoopClock()
        self._session: str | None = None
        self._lease_ttl = DEFAULT_LEASE_TTL_S
        self._valid_until = -1.0
        """Stock is served only before then: the limiter may forget us (and refill the
        buckets in place of our stock) a lease TTL after the last call it answered."""
        self._keys: dict[BucketKey, KeyStock] = {}
        self._seq = itertools.count(1)
        self._flush_lock: asyncio.Lock | None = None
        self._flushing = False
        self._again = False
        self._dirty_since: float | None = None
        self._last_sent = 0.0
        self._tick_timer: Any = None
        self._flush_timer: Any = None
        self._flush_at = math.inf
        self._relaxed = False
        """Every key relaxed as of the limiter's last views: reports may wait longer."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._replies: list[asyncio.Future[bool]] = []
        """Retries waiting for the limiter's next answer to a report (``_hear_overloads``)."""
        self._closed = False

    def __repr__(self) -> str:
        parts = "; ".join(repr(x) for x in self._keys.values()) or "idle"
        return f"LimiterLease({self.lease_id[:8]}; {parts})"

    # -- the caller's side -------------------------------------------------------------------

    @asynccontextmanager
    async def reserve(self, key: BucketKey, *, input_tokens: int, output_tokens: int,
                      timeout_s: float | None = None,
                      after_overloaded: bool = False) -> AsyncIterator[Permit]:
        """Wait (first come, first served) for a permit for one call to ``key``'s tier.

        Args:
            key: The account and tier the call draws from.
            input_tokens: The estimate of tokens counting toward the input limit.
            output_tokens: The call's ``max_tokens``.
            timeout_s: Longest to wait for the permit (a retry's time budget), None: no limit.
            after_overloaded: The call's last attempt was answered overloaded (529/5xx): this
                retry waits until the limiter has counted that answer, so that a circuit
                breaker it opened stops the retry rather than stock taken before it opened.

        Raises:
            ConfigError: The call is larger than a bucket's whole per-minute capacity.
            TimeoutError: No permit within ``timeout_s`` (nothing was taken).
        """
        permit = await self._acquire(key, int(input_tokens), int(output_tokens), timeout_s,
                                     after_overloaded)
        try:
            yield permit
        finally:
            self._finished(permit)

    async def open(self) -> None:
        """Register with the limiter now, before the first call (a process about to call):
        that call's grant then costs one round trip instead of two."""
        if self._session is None and not self._closed:
            await self._flush()

    async def close(self) -> None:
        """Give back all stock and spare slots and let the limiter forget this lease.

        Call it once no call is in flight (a closed lease's slots are all given back).
        """
        self._closed = True
        await asyncio.gather(*self._tasks, return_exceptions=True)  # fetches in flight land
        for local in self._keys.values():
            self._give_back(local)
        if self._session is not None:
            await self._flush(closing=True)
        for timer in (self._tick_timer, self._flush_timer):
            if timer is not None:
                timer.cancel()

    async def _acquire(self, key: BucketKey, input_tokens: int, output_tokens: int,
                       timeout_s: float | None = None, after_overloaded: bool = False) -> Permit:
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        local = self._local(key)
        reason = local.too_big(input_tokens, output_tokens)
        if reason is not None:
            raise ConfigError(reason)
        if after_overloaded and local.overloads_heard < local.overloads_noted:
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with asyncio.timeout(timeout_s):
                await self._hear_overloads(local)
            if timeout_s is not None:  # one budget for both waits, not one each
                timeout_s = max(0.0, timeout_s - (loop.time() - start))
        now = self._clock.now()
        local.note_call(input_tokens, output_tokens, now)
        if not local.waiters and now < self._valid_until and \
                local.servable(input_tokens, output_tokens, now):
            permit = self._serve(local, input_tokens, output_tokens)
            self._pump(local)  # top up the stock in the background if it runs low
            return permit
        future: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        waiter = Waiter(input_tokens, output_tokens, future)
        local.waiters.append(waiter)
        self._arm_tick()  # renews the lease while we wait, however long
        self._pump(local)
        async with asyncio.timeout(timeout_s):  # raises TimeoutError once we gave all back
            try:
                return await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._undo(future.result())  # served just as we were cancelled: give back
                elif waiter in local.waiters:
                    local.waiters.remove(waiter)
                raise

    async def _hear_overloads(self, local: KeyStock) -> None:
        """Return once the limiter has answered a report holding every overloaded answer
        settled here so far, its views taken in (a pause it opened now holds our stock).

        The report went out within ``flush_interval_s`` of the answer, before any retry's
        backoff ends, so this rarely waits; but on a loaded box the reply can come later
        than the backoff, and stock spent meanwhile sent every retry into the outage (D16).
        """
        noted = local.overloads_noted
        while local.overloads_heard < noted and not self._closed:
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._replies.append(future)
            self._start_flush()  # the report is in flight or due: at once, not in 50 ms
            if not await future:
                return  # the limiter did not answer: the grant path meets that error itself

    # -- serving from stock ------------------------------------------------------------------

    def _serve(self, local: KeyStock, input_tokens: int, output_tokens: int) -> Permit:
        now = self._clock.now()
        local.take(input_tokens, output_tokens, now)
        self._mark_dirty()
        return Permit(self, local, input_tokens, output_tokens, now)

    def _undo(self, permit: Permit) -> None:
        permit._done = permit._landed = True
        permit._stock.put_back(permit.input_tokens, permit.output_tokens)
        self._pump(permit._stock)

    def _pump(self, local: KeyStock) -> None:
        """Serve queued calls from stock; start the key's one grant request if one is due."""
        self._serve_queue(local)
        now = self._clock.now()
        if local.fetching or now < local.paused_until:
            return
        if not local.waiters:
            # Top the stock up for calls to come, at most once per flush interval per key:
            # on the next settle batch, which carries the usage since the last one too.
            if self._closed or local.topping_up or now < local.topup_at \
                    or not self._headroom(local):
                return
            local.topping_up = True
            self._mark_dirty(urgent=True)  # half the stock is left: enough till then
            return
        local.fetching = True
        self._spawn(self._fetch(local))

    def _serve_queue(self, local: KeyStock) -> None:
        """Serve queued calls from stock, first come first served, until the first cannot be."""
        if self._clock.now() < local.paused_until:
            if local.pause_timer is None:
                local.pause_timer = self._clock.call_at(local.paused_until,
                                                        lambda: self._unpause(local))
            return
        while local.waiters:
            waiter = local.waiters[0]
            if waiter.future.done():
                local.waiters.popleft()
            elif self._clock.now() < self._valid_until and \
                    local.servable(waiter.input_tokens, waiter.output_tokens, self._clock.now()):
                local.waiters.popleft()
                waiter.future.set_result(self._serve(local, waiter.input_tokens,
                                                     waiter.output_tokens))
            else:
                break

    def _unpause(self, local: KeyStock) -> None:
        local.pause_timer = None
        self._pump(local)

    def _headroom(self, local: KeyStock) -> Amount:
        return local.headroom(self._clock.now(), self._batch, self._idle_ttl)

    def _give_back(self, local: KeyStock) -> None:
        local.give_back()
        self._mark_dirty()

    # -- grants ------------------------------------------------------------------------------

    async def _fetch(self, local: KeyStock) -> None:
        """The key's one grant request in flight: loop while calls are queued."""
        try:
            while self._clock.now() >= local.paused_until:
                waiters = [w for w in list(local.waiters)[:self._batch] if not w.future.done()]
                needs = local.needs(waiters)
                grant = await self._request_grant(local, needs)
                if grant is not None:
                    self._take(local, grant, needs, waiters)
                if not needs and (grant is None or not grant.extra):
                    # Nothing to spare: do not ask again before the next flush.
                    local.topup_at = self._clock.now() + self._flush_interval
                self._serve_queue(local)
                if grant is not None and grant.view is not None:
                    self._see(grant.view)  # after serving: only leftovers go back
                if not needs or not local.waiters:
                    break
        except Exception as exc:  # the limiter stayed unreachable: fail the queue, not hang it
            while local.waiters:
                waiter = local.waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
        finally:
            local.fetching = False
        self._pump(local)

    async def _request_grant(self, local: KeyStock, needs: list[Need]) -> Grant | None:
        if self._session is None:
            await self._flush()  # registers this lease
        request = GrantRequest(lease_id=self.lease_id, session=self._session or "",
                               seq=next(self._seq), key=local.key, needs=needs,
                               extra=self._headroom(local))
        sent = self._clock.now()
        grant: Grant = await self._rpc("acquire", request)
        if grant.session is None:  # the limiter forgot us (restart or expiry): register again
            self._session = None
            return None
        if grant.session != self._session:
            return None  # from a registration we have since replaced: its stock is gone
        self._renewed(sent)
        return grant

    def _renewed(self, sent: float) -> None:
        """The limiter answered a call we sent at ``sent`` for our session: it keeps our
        stock until at least a TTL after that (less a margin for clocks and delivery)."""
        self._valid_until = max(self._valid_until, sent + 0.8 * self._lease_ttl)

    def _take(self, local: KeyStock, grant: Grant, needs: list[Need],
              waiters: list[Waiter]) -> None:
        local.add(grant, needs)
        if grant.granted and grant.view is not None and not grant.view.paused_for_s:
            # The limiter's pause is over (it granted): ours, a hair later, must not hold the
            # grant back while the cluster waits for this call as its probe.
            local.paused_until = min(local.paused_until, self._clock.now())
        if grant.rejected is not None and waiters:
            refused = waiters[0]  # the limiter only ever refuses the first need
            if refused in local.waiters:
                local.waiters.remove(refused)
            if not refused.future.done():
                refused.future.set_exception(ConfigError(grant.rejected))
        self._arm_tick()  # stock must go back if nobody uses it

    # -- settling ----------------------------------------------------------------------------

    def _settled(self, permit: Permit, input_tokens: int, output_tokens: int,
                 headers: Mapping[str, str] | None, *, overloaded: bool = False,
                 retry_after_s: float | None = None) -> None:
        local = permit._stock
        self._land(permit)
        local.refund((permit.input_tokens, permit.output_tokens), (input_tokens, output_tokens))
        self._note_headers(local, headers)
        if overloaded:
            self._mark_dirty(urgent=True)  # the breaker counts streaks cluster-wide
            local.overloaded_call(permit._sent)
            if retry_after_s is not None:
                local.overload_retry_after = max(local.overload_retry_after or 0.0,
                                                 retry_after_s)
        else:
            local.answered_call(permit._sent)
        self._mark_dirty()
        if local.probing:
            self._start_flush()  # the probe's answer: the cluster waits to hear it
        # Otherwise settles go out with the flush interval's batch, whatever the call rate
        # (a count trigger sent a busy process's bursts in two batches each: twice the RPCs).
        # Overloaded answers go in the usual batches, with the answers around them: sent
        # alone at once, they would reach the limiter as a streak that the batched answers
        # in between never break (D1's random 529s opened the breaker).
        self._pump(local)  # our own queued calls use the refund first
        if local.contended and not local.waiters and any(local.stock):
            self._give_back(local)  # others wait for these tokens: send them now
            self._start_flush()

    def _rate_limited(self, permit: Permit, retry_after_s: float | None,
                      headers: Mapping[str, str] | None) -> None:
        local = permit._stock
        self._land(permit)
        now = self._clock.now()
        pause = DEFAULT_PAUSE_S if retry_after_s is None else max(0.0, retry_after_s)
        local.paused_until = max(local.paused_until, now + pause)
        local.retry_after = (pause, now)
        self._note_headers(local, headers)
        self._mark_dirty()
        self._start_flush()  # the whole cluster must hear of a 429 now, not in 50 ms

    def _note_headers(self, local: KeyStock, headers: Mapping[str, str] | None) -> None:
        reading = HeaderReading.parse(headers)
        if reading is not None:
            local.headers = (reading, self._clock.now())

    def _finished(self, permit: Permit) -> None:
        """The call left its ``reserve`` block: its slot serves the next call or goes back."""
        permit._done = True  # if it was not settled, the reservation stays spent
        self._land(permit)
        local = permit._stock
        local.inflight -= 1
        # While probing or ramping up after a breaker (``local.probing``) a slot kept spare
        # here would be one of the few the cluster has, idle while our own grant request
        # parked at the limiter waits for it: give it back at once.
        # Otherwise keep it spare for the next call while this process had as many in flight
        # lately (a wave of calls would otherwise ask for slots again, one RPC per wave).
        if not local.contended and not local.probing and \
                (local.waiters or local.spare_slots < self._batch
                 or local.inflight + local.spare_slots < local.peak):
            local.spare_slots += 1
        else:
            local.released += 1
            self._mark_dirty()
            if local.contended or local.probing:
                self._start_flush()
        local.last_active = self._clock.now()
        self._pump(local)

    def _land(self, permit: Permit) -> None:
        """The call's reservation counts as used from now (see ``KeyStock.sent``)."""
        if not permit._landed:
            permit._landed = True
            permit._stock.landed(permit.input_tokens, permit.output_tokens)
            self._mark_dirty()

    # -- reporting ---------------------------------------------------------------------------

    def _mark_dirty(self, urgent: bool = False) -> None:
        """Something to report: it goes out ``flush_interval_s`` (``RELAXED_FLUSH_S`` while
        relaxed, unless ``urgent``) after the first unreported change, with whatever else
        comes up meanwhile (one batch, however many calls)."""
        if self._dirty_since is None:
            self._dirty_since = self._clock.now()
        slow = self._relaxed and not urgent
        due = self._dirty_since + (RELAXED_FLUSH_S if slow else self._flush_interval)
        if due < self._flush_at:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self._flush_at = due
            self._flush_timer = self._clock.call_at(due, self._flush_due)
        self._arm_tick()

    def _flush_due(self) -> None:
        self._flush_timer, self._flush_at = None, math.inf
        if self._dirty_since is not None:
            self._start_flush()

    def _arm_tick(self) -> None:
        if self._tick_timer is None:
            self._tick_timer = self._clock.call_at(self._clock.now() + self._flush_interval,
                                                   self._tick)

    def _tick(self) -> None:
        """Housekeeping every ``flush_interval_s`` while this lease holds or owes anything."""
        self._tick_timer = None
        now = self._clock.now()
        for local in self._keys.values():
            if (now >= local.last_active + self._idle_ttl and not local.inflight
                    and not local.waiters and (local.spare_slots or any(local.stock))):
                self._give_back(local)
        renew_due = self._session is not None and now >= self._last_sent + self._lease_ttl / 4
        holding = any(x.holds_anything() for x in self._keys.values())
        if renew_due and holding:
            self._start_flush()
        if holding or self._dirty_since is not None:
            self._arm_tick()

    def _start_flush(self) -> None:
        """Flush now; if a flush is in flight, send another right after it."""
        self._again = self._flushing
        if not self._flushing:
            self._spawn(self._flush())

    async def _flush(self, closing: bool = False) -> None:
        """Send one batch: changes since the last, every holding, and renew (or register)."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            self._flushing = True
            answered = False
            try:
                while True:
                    self._again = False
                    sent = self._clock.now()
                    noted = [(x, x.overloads_noted) for x in self._keys.values()]
                    batch = self._build_batch(closing)
                    try:
                        reply: SettleReply = await self._rpc("settle", batch)
                    finally:
                        for topup in batch.topups:
                            self._local(topup.key).topping_up = False
                    self._adopt(reply)
                    for local, count in noted:
                        local.overloads_heard = max(local.overloads_heard, count)
                    answered = True
                    self._answer_replies(True)  # not after the reports queued behind this
                    self._renewed(sent)
                    self._topped_up(reply)
                    for local in self._keys.values():
                        if local.waiters:  # they may have waited for a renewal only
                            self._pump(local)
                    owed = self._dirty_since is not None or \
                        any(x.topping_up for x in self._keys.values())
                    if not (self._again and owed) or closing:
                        break
            finally:
                self._flushing = False
                self._answer_replies(answered)

    def _answer_replies(self, answered: bool) -> None:
        """Wake the retries waiting in ``_hear_overloads``: each checks whether it was heard
        and, if not, waits for the next answer."""
        replies, self._replies = self._replies, []
        for future in replies:
            if not future.done():
                future.set_result(answered)

    def _build_batch(self, closing: bool) -> SettleBatch:
        now = self._clock.now()
        reports = [local.report(now) for local in self._keys.values() if local.unreported()]
        holdings = [Holding(key=k, slots=x.inflight + x.spare_slots)
                    for k, x in self._keys.items() if x.inflight + x.spare_slots]
        topups = [] if closing else [
            TopUp(key=k, amount=amount) for k, x in self._keys.items()
            if x.topping_up and (amount := self._headroom(x))]
        for k, x in self._keys.items():
            x.topping_up = any(t.key == k for t in topups)
        self._dirty_since = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer, self._flush_at = None, math.inf
        self._last_sent = now
        return SettleBatch(lease_id=self.lease_id, session=self._session, seq=next(self._seq),
                           holdings=holdings, reports=reports, job=self.job, closing=closing,
                           topups=topups)

    def _topped_up(self, reply: SettleReply) -> None:
        """Put a settle reply's top-ups into stock (after ``_adopt``: a new session's stock)."""
        for extra in reply.extras:
            local = self._local(extra.key)
            local.add_extra(extra.amount)
            if not extra.amount:  # nothing to spare: do not ask again before the next flush
                local.topup_at = self._clock.now() + self._flush_interval
            self._arm_tick()  # stock must go back if nobody uses it
            self._pump(local)

    def _adopt(self, reply: SettleReply) -> None:
        """Take in a settle reply; a new session means our old stock no longer exists."""
        if reply.session != self._session:
            for local in self._keys.values():
                local.forget_stock()
            self._session = reply.session
        self._lease_ttl = reply.lease_ttl_s
        self._limiter.found_at(reply.name, reply.namespace)
        for view in reply.views:
            self._see(view)

    def _see(self, view: KeyView) -> None:
        local = self._local(view.key)
        local.see(view, self._clock.now())
        self._relaxed = all(x.relaxed for x in self._keys.values())
        if not self._relaxed and self._dirty_since is not None:
            self._mark_dirty()  # a report timed while relaxed goes out sooner
        # A 429 pause: no stock may go out after it, or every process sends what it holds at
        # once. While probing, only a lease with calls queued keeps stock (the probe's grant).
        halted = view.paused_for_s > 0 or (view.probing and not local.waiters)
        if (view.waiting_others or halted) and (any(local.stock) or local.spare_slots):
            self._give_back(local)
            self._start_flush()  # others are waiting for exactly this

    # -- plumbing ----------------------------------------------------------------------------

    async def _rpc(self, method: str, arg: Any) -> Any:
        """Call the limiter, retrying the same message while Ray restarts it; a limiter dead
        for good is looked up again by name (bounded: then ``SingletonLost``)."""
        deadline = self._clock.now() + self._give_up_after
        delay = 0.05
        while True:
            handle = await self._limiter.ahandle()
            try:
                return await getattr(handle, method).remote(arg)
            except RayActorError as exc:
                if isinstance(exc, ActorDiedError) and self._limiter.name is not None:
                    await self._limiter.find_again(handle)
                    continue
                if self._clock.now() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _local(self, key: BucketKey) -> KeyStock:
        local = self._keys.get(key)
        if local is None:
            local = self._keys[key] = KeyStock(key)
            self._relaxed = False  # until the limiter has told us about it
        return local

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ray_job_id() -> str | None:
    """The Ray job of this process: what a user calls a job (one driver, one ``ray job
    submit``, one ``raytroupe run``); None outside Ray."""
    if not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_job_id())
