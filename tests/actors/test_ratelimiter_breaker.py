"""The circuit breaker for overloaded answers (issue 12, D16), on a fake clock.

The server answers 529 for three seconds while 40 calls are in flight over four processes.
Before, every call retried on its own backoff, so the cluster kept sending at most of its normal
rate into the outage. Now three overloaded answers open the key's breaker: one probe per pause
(1 s, then 2 s), and once a probe gets through the concurrency ramps up from one call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from actors.limiter_breaker import FIRST_PAUSE_S, OPEN_AFTER
from actors.limiter_buckets import LoopClock
from actors.limiter_lease import RELAXED_FLUSH_S, LimiterLease
from actors.limiter_stock import KeyStock
from actors.limits import GrantRequest, KeyReport, Need, SettleBatch, TierLimits
from actors.ratelimiter import RateLimiter
from tests.actors.test_ratelimiter import KEY, InProcessHandle, make, spin, until
from tests.actors.test_ratelimiter_fair import _sleep
from tests.fake_clock import FakeClock

OUTAGE = (1_001.0, 1_004.0)
LATENCY_S, DELAY_S, ATTEMPTS = 0.2, 0.5, 5


async def _call(lease: LimiterLease, clock: FakeClock, sent: list[tuple[float, int]],
                inflight: list[int]) -> bool:
    """One call as the Agent makes it: an attempt per permit, its own backoff on a 529."""
    for _ in range(ATTEMPTS):
        async with lease.reserve(KEY, input_tokens=10, output_tokens=0) as permit:
            inflight[0] += 1
            sent.append((clock.now(), inflight[0]))
            await _sleep(clock, LATENCY_S)
            inflight[0] -= 1
            if OUTAGE[0] <= clock.now() < OUTAGE[1]:
                permit.overloaded()
            else:
                permit.settle(input_tokens=10, output_tokens=0)
                return True
        await _sleep(clock, DELAY_S)
    return False


@pytest.mark.asyncio
async def test_an_outage_opens_the_breaker_one_probe_per_pause_then_a_gradual_ramp() -> None:
    limiter, clock = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                     max_concurrency=40))
    leases = [LimiterLease(InProcessHandle(limiter), clock=clock) for _ in range(4)]
    sent: list[tuple[float, int]] = []
    inflight = [0]
    calls = [asyncio.ensure_future(_call(leases[i % 4], clock, sent, inflight))
             for i in range(400)]
    for _ in range(1_500):  # 15 s in 10 ms steps: the outage and the recovery after it
        clock.advance(0.01)
        await spin()
        if all(c.done() for c in calls):
            break
    assert all(c.done() for c in calls)
    assert sum(c.result() for c in calls) == 400  # waiting in the breaker spent no attempts
    in_outage = [t for t, _ in sent if OUTAGE[0] <= t + LATENCY_S < OUTAGE[1]]
    # The 40 in flight when it began, then one probe per pause (1 s, 2 s) and a spare. With
    # each call retrying on its own (the code before the breaker) this was 600.
    assert len(in_outage) <= 40 + 3, sorted(in_outage)
    # After the outage: the probe alone, then the concurrency grows round by round.
    after = [(t, n) for t, n in sent if t + LATENCY_S >= OUTAGE[1]]
    start = after[0][0]
    peaks = [max((n for t, n in after if start + i * LATENCY_S <= t
                  < start + (i + 1) * LATENCY_S), default=0) for i in range(6)]
    assert peaks[0] == 1 and peaks[1] <= 2 and peaks[2] <= 4, peaks
    assert max(n for _, n in after) == 40  # back to the limit


@pytest.mark.asyncio
async def test_overloaded_reports_open_the_breaker_only_after_k_in_a_row() -> None:
    limiter, clock = make()
    a = (await limiter.settle(SettleBatch(lease_id="a", session=None, seq=1))).session
    await limiter.settle(SettleBatch(lease_id="a", session=a, seq=2, reports=[
        KeyReport(key=KEY, overloaded=OPEN_AFTER - 1), KeyReport(key=KEY, answered=1)]))
    await limiter.settle(SettleBatch(lease_id="a", session=a, seq=3, reports=[
        KeyReport(key=KEY, overloaded=OPEN_AFTER - 1)]))
    status = await limiter.status()
    assert status.buckets[0].paused_for_s == 0  # an answer in between: no streak of K
    reply = await limiter.settle(SettleBatch(lease_id="a", session=a, seq=4, reports=[
        KeyReport(key=KEY, overloaded=1)]))
    assert reply.views[0].paused_for_s == FIRST_PAUSE_S
    probe = asyncio.ensure_future(limiter.acquire(GrantRequest(
        lease_id="a", session=a, seq=5, key=KEY, needs=[Need(input_tokens=1, output_tokens=0)]
        * 3)))
    clock.advance(FIRST_PAUSE_S)
    await spin()
    assert probe.done() and probe.result().granted == 1  # one call: the probe
    # The probe is answered 529: the breaker reopens at once, for twice as long.
    reply = await limiter.settle(SettleBatch(lease_id="a", session=a, seq=6, reports=[
        KeyReport(key=KEY, overloaded=1, released_slots=1)]))
    assert reply.views[0].paused_for_s == 2 * FIRST_PAUSE_S


@pytest.mark.asyncio
async def test_the_first_wave_opens_the_breaker_though_an_earlier_answer_shares_its_batch(
        ) -> None:
    # D16 on a loaded CI box: a call sent just before the outage was answered after its first
    # wave's 529s (they come back at once), in the same batch. Counting none of a batch that
    # held an answer kept the breaker shut until every call's retry had been answered 529 too
    # (47 requests in the window, not ~31).
    limiter, clock = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                     max_concurrency=40))
    lease = LimiterLease(InProcessHandle(limiter), clock=clock)
    async with contextlib.AsyncExitStack() as calls:
        before = await _hold(calls, lease)
        clock.advance(0.01)
        wave = [await _hold(calls, lease) for _ in range(OPEN_AFTER)]
        for permit in wave:
            permit.overloaded()
        before.settle(input_tokens=10, output_tokens=0)  # sent first, answered last
    clock.advance(0.05)  # one batch: answered 1, overloaded 5
    await spin()
    assert (await limiter.status()).buckets[0].paused_for_s > 0


def test_a_lease_orders_answers_by_when_their_calls_were_sent() -> None:
    stock = KeyStock(KEY)
    stock.overloaded_call(sent=1.0)
    stock.overloaded_call(sent=1.1)
    stock.answered_call(sent=0.9)  # sent before both, answered after: old news
    report = stock.report(now=2.0)
    assert (report.answered, report.overloaded_trailing, report.answers_break_streak) == \
        (1, 2, False)
    stock.answered_call(sent=1.05)  # sent between them: the streak starts again after it
    stock.overloaded_call(sent=1.2)
    report = stock.report(now=2.1)
    assert (report.overloaded_trailing, report.answers_break_streak) == (2, True)
    stock.answered_call(sent=1.3)  # nothing overloaded after it: it ends the streak
    report = stock.report(now=2.2)
    assert (report.overloaded_trailing, report.answers_break_streak) == (0, True)


class SlowReplies(InProcessHandle):
    """The limiter applies a settle batch at once, but its reply reaches the lease ``delay_s``
    later (a loaded box): the lease learns of a breaker its report opened only then."""

    def __init__(self, target: RateLimiter, clock: FakeClock, delay_s: float) -> None:
        super().__init__(target)
        self.clock, self.delay_s = clock, delay_s

    def __getattr__(self, name: str) -> Any:
        if name != "settle":
            return super().__getattr__(name)
        handle = self

        class _Settle:
            @staticmethod
            def remote(arg: Any) -> asyncio.Future[Any]:
                handle.calls[name] += 1
                reply = asyncio.get_running_loop().create_future()
                applied = asyncio.ensure_future(handle.target.settle(arg))
                applied.add_done_callback(lambda done: handle.clock.call_at(
                    handle.clock.now() + handle.delay_s,
                    lambda: reply.done() or reply.set_result(done.result())))
                return reply

        return _Settle


@pytest.mark.asyncio
async def test_a_retry_after_a_529_waits_for_the_limiter_to_count_it_not_for_stock() -> None:
    # The report of the first wave opens the breaker at once, but its reply takes longer than
    # the retries' backoff: retries served from the lease's stock meanwhile went out into the
    # outage, every one of them (D16 under load: 16 of 47 requests).
    limiter, clock = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                     max_concurrency=40))
    lease = LimiterLease(SlowReplies(limiter, clock, delay_s=DELAY_S + 0.3), clock=clock)
    sent: list[float] = []

    async def call() -> None:
        for attempt in range(ATTEMPTS):
            async with lease.reserve(KEY, input_tokens=10, output_tokens=0,
                                     after_overloaded=attempt > 0) as permit:
                sent.append(clock.now())
                await _sleep(clock, LATENCY_S)
                if clock.now() < outage_end:
                    permit.overloaded()
                else:
                    permit.settle(input_tokens=10, output_tokens=0)
                    return
            await _sleep(clock, DELAY_S)

    registered = asyncio.ensure_future(lease.open())  # then grants are prompt, settles slow
    await spin()
    clock.advance(DELAY_S + 0.3)
    await until(registered.done)
    outage_end = clock.now() + 2.0
    calls = [asyncio.ensure_future(call()) for _ in range(20)]
    for _ in range(3_000):  # up to 30 s in 10 ms steps (replies 0.8 s late slow the ramp)
        clock.advance(0.01)
        await spin()
        if all(c.done() for c in calls):
            break
    assert all(c.done() for c in calls)
    in_outage = [t for t in sent if t + LATENCY_S < outage_end]
    # The 20 calls, then one probe per pause (1 s, then 2 s: the second lands after the end).
    # A retry served from stock before the lease heard of the breaker: 20 + 16 more.
    assert len(in_outage) <= 20 + 2, in_outage


async def _slow_lease(delay_s: float) -> LimiterLease:
    """A registered lease on the real clock whose settle replies take ``delay_s``."""
    limiter, _ = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                 max_concurrency=40))
    lease = LimiterLease(SlowReplies(limiter, LoopClock(), delay_s))  # type: ignore[arg-type]
    await lease.open()
    return lease


@pytest.mark.asyncio
async def test_a_retry_waiting_to_be_heard_keeps_to_its_time_budget() -> None:
    # ``timeout_s`` is the retry's whole budget (the call's ``max_wait_s``): the wait for the
    # limiter to hear of the 529 spends it too. It restarted the budget for the wait in the
    # queue: a call whose budget is shorter than the pause failed only after both waits.
    lease = await _slow_lease(delay_s=0.15)
    async with contextlib.AsyncExitStack() as calls:
        wave = [await _hold(calls, lease) for _ in range(OPEN_AFTER)]
        for permit in wave:
            permit.overloaded()  # opens the breaker: a 1 s pause once the lease hears of it
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with lease.reserve(KEY, input_tokens=10, output_tokens=0, timeout_s=0.4,
                                 after_overloaded=True):
            pass
    assert loop.time() - start < 0.5  # not 0.15 or more to hear of the 529, then 0.4 more
    await lease.close()


@pytest.mark.asyncio
async def test_a_retry_goes_once_its_529_is_heard_not_after_the_reports_queued_behind() -> None:
    # The lease sends report after report while something urgent keeps coming up (a 429 on
    # another tier here; a contended key's give-backs on a busy process). A retry waiting to
    # be heard was let go only once that run of reports ended: a round trip per report more.
    lease = await _slow_lease(delay_s=0.2)
    other = KEY.model_copy(update={"tier": "haiku"})
    async with lease.reserve(other, input_tokens=10, output_tokens=0) as limited:
        async with lease.reserve(KEY, input_tokens=10, output_tokens=0) as failed:
            failed.overloaded()
        loop = asyncio.get_running_loop()
        start = loop.time()
        retry = asyncio.ensure_future(_enter(lease.reserve(
            KEY, input_tokens=10, output_tokens=0, after_overloaded=True)))
        await asyncio.sleep(0.05)  # the report of the 529 is on its way
        limited.rate_limited(retry_after_s=5.0)  # urgent: a report right after it
        await retry
    assert loop.time() - start < 0.35  # one round trip (0.2 s), not two
    await lease.close()


async def _enter(reserve: Any) -> None:
    async with reserve:
        pass


@pytest.mark.asyncio
async def test_a_late_answer_from_another_process_does_not_hide_the_first_wave() -> None:
    # D16 runs its agents in two processes: the reply of a call one of them sent just before
    # the outage lands after the other's first 529s, in a report of its own.
    limiter, clock = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                     max_concurrency=40))
    old, new = (LimiterLease(InProcessHandle(limiter), clock=clock) for _ in range(2))
    async with contextlib.AsyncExitStack() as calls:
        before = await _hold(calls, old)
        clock.advance(0.01)
        wave = [await _hold(calls, new) for _ in range(OPEN_AFTER)]
        for permit in wave[:2]:
            permit.overloaded()
        clock.advance(0.05)  # the first two 529s are reported
        await spin()
        before.settle(input_tokens=10, output_tokens=0)  # sent before them, answered after
        clock.advance(RELAXED_FLUSH_S)  # and reported
        await spin()
        for permit in wave[2:]:
            permit.overloaded()
    clock.advance(0.05)
    await spin()
    assert (await limiter.status()).buckets[0].paused_for_s > 0


async def _hold(calls: contextlib.AsyncExitStack, lease: LimiterLease) -> Any:
    """A permit held until ``calls`` closes: a call in flight."""
    return await calls.enter_async_context(lease.reserve(KEY, input_tokens=10,
                                                         output_tokens=0))
