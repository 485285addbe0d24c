"""A process's window onto the cluster's RateLimiter: grants in batches, a local stock, no RPC
per call.

Everything the limiter grants lands in this lease's stock, already taken from the cluster's
buckets, so serving a call from stock never lets the cluster exceed a limit. Calls queue here
first come, first served; when the stock cannot serve the first, one grant request (per key)
asks the limiter for the needs of the queued calls plus some headroom. Usage goes back in
batches every ``flush_interval_s`` (or every ``batch_size`` settles), which also renews the
lease. Stock and spare slots go back after ``idle_ttl_s`` without calls, or at once when other
processes are waiting for them.

Example:
    >>> lease = LimiterLease(limiter)                              # one per process
    >>> key = BucketKey(account="a1b2c3", tier="sonnet")
    >>> async with lease.reserve(key, input_tokens=900, output_tokens=1024) as permit:
    ...     response = await send()                                # doctest: +SKIP
    ...     permit.settle(input_tokens=812, output_tokens=240, headers=response.headers)
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorDiedError, RayActorError

from actors.errors import ConfigError
from actors.limits import (
    Amount,
    BucketKey,
    Grant,
    GrantRequest,
    HeaderReading,
    Holding,
    KeyReport,
    KeyView,
    Need,
    SettleBatch,
    SettleReply,
)
from actors.ratelimiter import DEFAULT_LEASE_TTL_S, Clock, LoopClock

DEFAULT_PAUSE_S = 1.0
"""How long a 429 without ``retry-after`` pauses its bucket."""
_STOCK_S = 0.2
"""Headroom: stock for this many seconds of calls at the recent rate."""
_RATE_WINDOW_S = 0.25

_T = TypeVar("_T")


@dataclass(eq=False)
class _Local:
    """One key as this process sees it: stock, slots, queued calls and unreported changes."""

    key: BucketKey
    stock: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    spare_slots: int = 0
    inflight: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)
    fetching: bool = False
    view: KeyView | None = None
    paused_until: float = 0.0
    pause_timer: Any = None
    last_active: float = 0.0
    topup_at: float = 0.0
    """No stock top-up before then (set when the limiter last had none to give)."""
    typical: tuple[float, float] | None = None
    """Moving average of (input, output) tokens per call: sizes the headroom."""
    rate: float = 0.0
    """Calls per second lately (a moving average over windows of ``_RATE_WINDOW_S``)."""
    window: tuple[float, int] = (0.0, 0)
    # Unreported changes, cleared when a batch is built:
    used: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    returned: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    charged: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    released: int = 0
    headers: tuple[HeaderReading, float] | None = None
    retry_after: tuple[float, float] | None = None

    def holds_anything(self) -> bool:
        return bool(self.inflight or self.spare_slots or any(self.stock) or self.waiters)

    def unreported(self) -> bool:
        return bool(any(self.used) or any(self.returned) or any(self.charged) or self.released
                    or self.headers or self.retry_after)


@dataclass(eq=False)
class _Waiter:
    input_tokens: int
    output_tokens: int
    future: asyncio.Future[Permit]


class Permit:
    """One call's reservation. Tell it what the call really used, or that it got a 429.

    Leaving the ``reserve`` block without either keeps the whole reservation spent (the call
    may have been billed) and frees the concurrency slot.
    """

    __slots__ = ("_done", "_lease", "_local", "input_tokens", "output_tokens")

    def __init__(self, lease: LimiterLease, local: _Local, input_tokens: int,
                 output_tokens: int) -> None:
        self._lease, self._local = lease, local
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        self._done = False

    def __repr__(self) -> str:
        return (f"Permit({self._local.key.tier}, in={self.input_tokens}, "
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
        """Report a 429: the bucket pauses cluster-wide for ``retry_after_s`` (1 s if unknown).

        The reservation stays spent.
        """
        if not self._done:
            self._done = True
            self._lease._rate_limited(self._local, retry_after_s, headers)


class LimiterLease:
    """The per-process client of the RateLimiter actor; one per process (an Agent holds one).

    Args:
        limiter: The RateLimiter actor handle (:func:`~actors.ratelimiter.get_rate_limiter`).
        batch_size: Most calls asked for in one grant request, headroom in calls, and settles
            that trigger a flush before ``flush_interval_s``.
        flush_interval_s: Longest a settle waits before it is reported.
        idle_ttl_s: Unused stock and spare slots go back after this long without a call.
        give_up_after_s: How long to retry a limiter that cannot be reached before raising.
        clock: Time source and timers (tests pass a fake one).
    """

    def __init__(self, limiter: Any, *, batch_size: int = 16, flush_interval_s: float = 0.05,
                 idle_ttl_s: float = 1.0, give_up_after_s: float = 120.0,
                 clock: Clock | None = None) -> None:
        self._limiter = limiter
        self.lease_id = uuid.uuid4().hex
        self._batch, self._flush_interval = batch_size, flush_interval_s
        self._idle_ttl, self._give_up_after = idle_ttl_s, give_up_after_s
        self._clock: Clock = clock or LoopClock()
        self._session: str | None = None
        self._lease_ttl = DEFAULT_LEASE_TTL_S
        self._address: tuple[str | None, str | None] = (None, None)
        self._keys: dict[BucketKey, _Local] = {}
        self._seq = itertools.count(1)
        self._flush_lock: asyncio.Lock | None = None
        self._flushing = False
        self._again = False
        self._dirty_since: float | None = None
        self._unflushed_settles = 0
        self._last_sent = 0.0
        self._tick_timer: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __repr__(self) -> str:
        parts = [f"{k.tier}: {x.inflight} in flight, {len(x.waiters)} waiting, "
                 f"stock {x.stock[0]:.0f} req/{x.stock[1]:.0f} in/{x.stock[2]:.0f} out"
                 for k, x in self._keys.items()]
        return f"LimiterLease({self.lease_id[:8]}; {'; '.join(parts) or 'idle'})"

    # -- the caller's side -------------------------------------------------------------------

    @asynccontextmanager
    async def reserve(self, key: BucketKey, *, input_tokens: int,
                      output_tokens: int) -> AsyncIterator[Permit]:
        """Wait (first come, first served) for a permit for one call to ``key``'s tier.

        Args:
            key: The account and tier the call draws from.
            input_tokens: The estimate of tokens counting toward the input limit.
            output_tokens: The call's ``max_tokens``.

        Raises:
            ConfigError: The call is larger than a bucket's whole per-minute capacity.
        """
        permit = await self._acquire(key, int(input_tokens), int(output_tokens))
        try:
            yield permit
        finally:
            self._finished(permit)

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
        if self._tick_timer is not None:
            self._tick_timer.cancel()

    async def _acquire(self, key: BucketKey, input_tokens: int, output_tokens: int) -> Permit:
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        local = self._local(key)
        self._check_size(local, input_tokens, output_tokens)
        local.last_active = self._clock.now()
        local.typical = _average(local.typical, input_tokens, output_tokens)
        if not local.waiters and self._servable(local, input_tokens, output_tokens):
            permit = self._serve(local, input_tokens, output_tokens)
            self._pump(local)  # top up the stock in the background if it runs low
            return permit
        future: asyncio.Future[Permit] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(input_tokens, output_tokens, future)
        local.waiters.append(waiter)
        self._arm_tick()  # renews the lease while we wait, however long
        self._pump(local)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._undo(future.result())  # served just as we were cancelled: give it back
            elif waiter in local.waiters:
                local.waiters.remove(waiter)
            raise

    def _check_size(self, local: _Local, input_tokens: int, output_tokens: int) -> None:
        if local.view is None:
            return  # the limiter checks on our first request
        limits = local.view.limits
        for amount, cap, what in ((input_tokens, limits.itpm, "input tokens"),
                                  (output_tokens, limits.otpm, "output tokens")):
            if amount > cap:
                raise ConfigError(f"{local.key.tier}: the request needs {amount:,} {what} but "
                                  f"the limit is {cap:,}/min; make it smaller or raise the "
                                  "tier's limit")

    # -- local stock -------------------------------------------------------------------------

    def _servable(self, local: _Local, input_tokens: int, output_tokens: int) -> bool:
        stock = local.stock
        return (local.spare_slots > 0 and stock[0] >= 1 and stock[1] >= input_tokens
                and stock[2] >= output_tokens and self._clock.now() >= local.paused_until)

    def _serve(self, local: _Local, input_tokens: int, output_tokens: int) -> Permit:
        for i, amount in enumerate((1, input_tokens, output_tokens)):
            local.stock[i] -= amount
            local.used[i] += amount
        local.spare_slots -= 1
        local.inflight += 1
        self._count_call(local)
        self._mark_dirty()
        return Permit(self, local, input_tokens, output_tokens)

    def _count_call(self, local: _Local) -> None:
        now = self._clock.now()
        started, calls = local.window
        if now >= started + _RATE_WINDOW_S:
            measured = calls / max(now - started, _RATE_WINDOW_S)
            local.rate = measured if local.rate == 0 else (local.rate + measured) / 2
            started, calls = now, 0
        local.window = (started, calls + 1)

    def _undo(self, permit: Permit) -> None:
        local = permit._local
        for i, amount in enumerate((1, permit.input_tokens, permit.output_tokens)):
            local.stock[i] += amount
            local.used[i] -= amount
        local.inflight -= 1
        local.spare_slots += 1
        permit._done = True
        self._pump(local)

    def _pump(self, local: _Local) -> None:
        """Serve queued calls from stock; start the key's one grant request if one is due."""
        self._serve_queue(local)
        now = self._clock.now()
        if local.fetching or now < local.paused_until:
            return
        if not local.waiters:
            if self._closed:
                return
            # Top the stock up for calls to come, at most once per flush interval per key.
            if now < local.topup_at or not self._headroom(local):
                return
        local.fetching = True
        self._spawn(self._fetch(local))

    def _serve_queue(self, local: _Local) -> None:
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
            elif self._servable(local, waiter.input_tokens, waiter.output_tokens):
                local.waiters.popleft()
                waiter.future.set_result(self._serve(local, waiter.input_tokens,
                                                     waiter.output_tokens))
            else:
                break

    def _unpause(self, local: _Local) -> None:
        local.pause_timer = None
        self._pump(local)

    def _headroom(self, local: _Local) -> Amount:
        """Stock to ask for beyond the queued calls, while nobody else waits: enough for
        ``_STOCK_S`` of calls at the recent rate (``batch_size`` at least), once the stock is
        under half of that. A busy process thus asks about ten times a second, whatever its
        rate; the limiter caps what one stock may take (``_EXTRA_SHARE``)."""
        view = local.view
        if local.typical is None or (view is not None and view.waiting_others):
            return Amount()
        if self._clock.now() > local.last_active + self._idle_ttl:
            return Amount()
        calls = max(self._batch, math.ceil(local.rate * _STOCK_S))
        target = (calls, calls * local.typical[0], calls * local.typical[1])
        if all(s >= t / 2 for s, t in zip(local.stock, target, strict=True)):
            return Amount()
        return Amount.of([max(0.0, t - s) for s, t in zip(local.stock, target, strict=True)])

    def _give_back(self, local: _Local) -> None:
        """Return all stock and spare slots to the buckets.

        Also when calls are queued here: others are waiting (or we are idle), and a lease that
        kept slots for its own queue while queued behind another lease's request for a slot
        would deadlock the two. Queued calls ask again, in turn.
        """
        for i in range(3):
            local.returned[i] += local.stock[i]
            local.stock[i] = 0.0
        local.released += local.spare_slots
        local.spare_slots = 0
        self._mark_dirty()

    # -- grants ------------------------------------------------------------------------------

    async def _fetch(self, local: _Local) -> None:
        """The key's one grant request in flight: loop while calls are queued."""
        try:
            while self._clock.now() >= local.paused_until:
                waiters = [w for w in list(local.waiters)[:self._batch] if not w.future.done()]
                needs = self._needs(local, waiters)
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

    @staticmethod
    def _needs(local: _Local, waiters: list[_Waiter]) -> list[Need]:
        """What each queued call lacks, in order, once the stock is shared out among them."""
        stock, spare, needs = list(local.stock), local.spare_slots, []
        for waiter in waiters:
            lack = []
            for i, amount in enumerate((1, waiter.input_tokens, waiter.output_tokens)):
                lack.append(max(0, math.ceil(amount - stock[i])))
                stock[i] = max(0.0, stock[i] - amount)
            needs.append(Need(request=lack[0] > 0, input_tokens=lack[1],
                              output_tokens=lack[2], slot=spare <= 0))
            spare -= 1
        return needs

    async def _request_grant(self, local: _Local, needs: list[Need]) -> Grant | None:
        if self._session is None:
            await self._flush()  # registers this lease
        request = GrantRequest(lease_id=self.lease_id, session=self._session or "",
                               seq=next(self._seq), key=local.key, needs=needs,
                               extra=self._headroom(local))
        grant: Grant = await self._rpc("acquire", request)
        if grant.session is None:  # the limiter forgot us (restart or expiry): register again
            self._session = None
            return None
        if grant.session != self._session:
            return None  # from a registration we have since replaced: its stock is gone
        return grant

    def _take(self, local: _Local, grant: Grant, needs: list[Need],
              waiters: list[_Waiter]) -> None:
        for need in needs[:grant.granted]:
            for i, amount in enumerate((need.request, need.input_tokens, need.output_tokens)):
                local.stock[i] += amount
            local.spare_slots += need.slot
        for i, amount in enumerate(grant.extra.as_tuple()):
            local.stock[i] += amount
        if grant.rejected is not None and waiters:
            refused = waiters[0]  # the limiter only ever refuses the first need
            if refused in local.waiters:
                local.waiters.remove(refused)
            if not refused.future.done():
                refused.future.set_exception(ConfigError(grant.rejected))
        self._arm_tick()  # stock must go back if nobody uses it

    # -- settling ----------------------------------------------------------------------------

    def _settled(self, permit: Permit, input_tokens: int, output_tokens: int,
                 headers: Mapping[str, str] | None) -> None:
        local = permit._local
        for i, (reserved, actual) in ((1, (permit.input_tokens, input_tokens)),
                                      (2, (permit.output_tokens, output_tokens))):
            if actual <= reserved:  # keep the refund in stock: it is ours, already taken
                local.stock[i] += reserved - actual
                local.used[i] -= reserved - actual
            else:
                local.charged[i] += actual - reserved
        self._note_headers(local, headers)
        self._unflushed_settles += 1
        self._mark_dirty()
        # Every ``batch_size`` settles, or, for a busy process, every flush interval's worth:
        # the limiter then hears from each process about 20 times a second at most.
        rate = sum(x.rate for x in self._keys.values())
        if self._unflushed_settles >= max(self._batch, rate * self._flush_interval):
            self._start_flush()
        self._pump(local)  # our own queued calls use the refund first
        if _contended(local) and not local.waiters and any(local.stock):
            self._give_back(local)  # others wait for these tokens: send them now
            self._start_flush()

    def _rate_limited(self, local: _Local, retry_after_s: float | None,
                      headers: Mapping[str, str] | None) -> None:
        now = self._clock.now()
        pause = DEFAULT_PAUSE_S if retry_after_s is None else max(0.0, retry_after_s)
        local.paused_until = max(local.paused_until, now + pause)
        local.retry_after = (pause, now)
        self._note_headers(local, headers)
        self._mark_dirty()
        self._start_flush()  # the whole cluster must hear of a 429 now, not in 50 ms

    def _note_headers(self, local: _Local, headers: Mapping[str, str] | None) -> None:
        reading = HeaderReading.parse(dict(headers) if headers else None)
        if reading is not None:
            local.headers = (reading, self._clock.now())

    def _finished(self, permit: Permit) -> None:
        """The call left its ``reserve`` block: its slot serves the next call or goes back."""
        if permit._done is False:
            permit._done = True  # unsettled: the reservation stays spent
        local = permit._local
        local.inflight -= 1
        if not _contended(local) and (local.waiters or local.spare_slots < self._batch):
            local.spare_slots += 1
        else:
            local.released += 1
            self._mark_dirty()
            if _contended(local):
                self._start_flush()
        local.last_active = self._clock.now()
        self._pump(local)

    # -- reporting ---------------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = self._clock.now()
        self._arm_tick()

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
        if (self._dirty_since is not None and now >= self._dirty_since + self._flush_interval) \
                or (renew_due and holding):
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
            try:
                while True:
                    self._again = False
                    reply: SettleReply = await self._rpc("settle", self._build_batch(closing))
                    self._adopt(reply)
                    if not (self._again and self._dirty_since is not None) or closing:
                        break
            finally:
                self._flushing = False

    def _build_batch(self, closing: bool) -> SettleBatch:
        now = self._clock.now()
        reports = [self._report(local, now) for local in self._keys.values()
                   if local.unreported()]
        holdings = [Holding(key=k, slots=x.inflight + x.spare_slots)
                    for k, x in self._keys.items() if x.inflight + x.spare_slots]
        self._dirty_since, self._unflushed_settles = None, 0
        self._last_sent = now
        return SettleBatch(lease_id=self.lease_id, session=self._session, seq=next(self._seq),
                           holdings=holdings, reports=reports, closing=closing)

    @staticmethod
    def _report(local: _Local, now: float) -> KeyReport:
        headers = retry = None
        if local.headers is not None:
            reading, seen = local.headers
            headers = reading.model_copy(update={"age_s": max(0.0, now - seen)})
        if local.retry_after is not None:
            pause, seen = local.retry_after
            retry = max(0.0, pause - (now - seen))
        report = KeyReport(key=local.key, used=Amount.of(local.used),
                           returned=Amount.of(local.returned), charged=Amount.of(local.charged),
                           released_slots=local.released, headers=headers, retry_after_s=retry)
        local.used, local.returned, local.charged = [0.0] * 3, [0.0] * 3, [0.0] * 3
        local.released, local.headers, local.retry_after = 0, None, None
        return report

    def _adopt(self, reply: SettleReply) -> None:
        """Take in a settle reply; a new session means our old stock no longer exists."""
        if reply.session != self._session:
            for local in self._keys.values():
                local.stock = [0.0, 0.0, 0.0]
                local.used, local.returned = [0.0] * 3, [0.0] * 3
            self._session = reply.session
        self._lease_ttl = reply.lease_ttl_s
        if reply.name is not None:
            self._address = (reply.name, reply.namespace)
        for view in reply.views:
            self._see(view)

    def _see(self, view: KeyView) -> None:
        local = self._local(view.key)
        local.view = view
        if view.paused_for_s > 0:
            local.paused_until = max(local.paused_until, self._clock.now() + view.paused_for_s)
        if view.waiting_others and (any(local.stock) or local.spare_slots):
            self._give_back(local)
            self._start_flush()  # others are waiting for exactly this

    # -- plumbing ----------------------------------------------------------------------------

    async def _rpc(self, method: str, arg: Any) -> Any:
        """Call the limiter, retrying the same message while it restarts (Ray restarts it)."""
        deadline = self._clock.now() + self._give_up_after
        delay = 0.05
        while True:
            try:
                return await getattr(self._limiter, method).remote(arg)
            except RayActorError as exc:
                if self._clock.now() > deadline:
                    raise
                if isinstance(exc, ActorDiedError):
                    await self._find_limiter_again()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _find_limiter_again(self) -> None:
        """A dead limiter may have been created again under its name (``get_rate_limiter``)."""
        name, namespace = self._address
        if name is None:
            return
        try:
            self._limiter = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
        except ValueError:
            pass  # not there (yet): keep retrying the old handle until the deadline

    def _local(self, key: BucketKey) -> _Local:
        local = self._keys.get(key)
        if local is None:
            local = self._keys[key] = _Local(key)
        return local

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _contended(local: _Local) -> bool:
    """Other processes are waiting for this key (as of our last word from the limiter)."""
    return local.view is not None and local.view.waiting_others > 0


def _average(previous: tuple[float, float] | None, input_tokens: int,
             output_tokens: int) -> tuple[float, float]:
    if previous is None:
        return (float(input_tokens), float(output_tokens))
    return (0.8 * previous[0] + 0.2 * input_tokens, 0.8 * previous[1] + 0.2 * output_tokens)
