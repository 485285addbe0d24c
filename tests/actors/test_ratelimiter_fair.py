"""Fair share between jobs under a binding limit (issue 8), on the limiter itself.

Three jobs wait for one key at once, as in ``benchmarks/jobs.py``: two big ones, each with two
processes that always keep 16 calls parked, and a small one with a single process that asks
for one call at a time, of half the size. First come, first served gave the small job one
grant per round of five parked requests (a fifth of the calls, a ninth of the tokens); each
job must get a third of the limit that binds, and the limit must still be used in full.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from actors.limiter_lease import LimiterLease
from actors.limits import Amount, GrantRequest, KeyReport, Need, SettleBatch, TierLimits
from actors.ratelimiter import RateLimiter
from tests.actors.test_ratelimiter import KEY, LIMITS, InProcessHandle, make, spin
from tests.fake_clock import FakeClock

# (lease, job, needs parked per request, input tokens per call)
LEASES = [("big-a1", "big-a", 16, 1_000), ("big-a2", "big-a", 16, 1_000),
          ("big-b1", "big-b", 16, 1_000), ("big-b2", "big-b", 16, 1_000),
          ("small1", "small", 1, 500)]


async def _keep_asking(limiter: RateLimiter, lease: str, job: str, parked: int, size: int,
                       tokens: Counter[str], stop: asyncio.Event) -> None:
    """A lease whose queue never runs dry: ask, spend what was granted at once, ask again."""
    reply = await limiter.settle(SettleBatch(lease_id=lease, session=None, seq=1, job=job))
    session, seq = reply.session, 2
    while not stop.is_set():
        needs = [Need(input_tokens=size, output_tokens=0)] * parked
        grant = await limiter.acquire(GrantRequest(lease_id=lease, session=session, seq=seq,
                                                   key=KEY, needs=needs))
        tokens[job] += grant.granted * size
        await limiter.settle(SettleBatch(lease_id=lease, session=session, seq=seq + 1, reports=[
            KeyReport(key=KEY, used=Amount(requests=grant.granted,
                                           input_tokens=grant.granted * size),
                      released_slots=grant.granted)]))
        seq += 2


@pytest.mark.asyncio
async def test_a_small_job_gets_its_share_of_a_binding_limit_while_big_jobs_wait() -> None:
    limiter, clock = make()
    tokens: Counter[str] = Counter()
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(_keep_asking(limiter, *lease, tokens, stop))
             for lease in LEASES]
    await spin()
    burst = sum(tokens.values())  # the full bucket at the start, before anyone waits
    tokens.clear()
    for _ in range(1_200):  # two minutes, every waiter parked the whole time
        clock.advance(0.1)
        await spin()
    stop.set()
    for task in tasks:
        task.cancel()
    total = sum(tokens.values())
    assert burst == LIMITS.itpm
    # The limit binds throughout and is used in full: 100 tokens a second for 120 s.
    assert total >= 0.97 * 120 * LIMITS.itpm / 60
    shares = {job: tokens[job] / total for job in ("big-a", "big-b", "small")}
    assert min(shares.values()) >= 0.30, shares


# -- a 429 storm (issue 12, D2) -----------------------------------------------------------------

STORM = (1_001.0, 1_003.0)
"""The server answers 429 with ``retry-after`` 0.5 s from 1 s to 3 s after the start."""
RETRY_AFTER_S, LATENCY_S, ATTEMPTS = 0.5, 0.2, 5


def _sleep(clock: FakeClock, seconds: float) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    clock.call_at(clock.now() + seconds, lambda: done.done() or done.set_result(None))
    return done


async def _call(lease: LimiterLease, clock: FakeClock, sent: list[float]) -> bool:
    """One call as the Agent makes it: an attempt per permit, retry-after on a 429."""
    for _ in range(ATTEMPTS):
        async with lease.reserve(KEY, input_tokens=10, output_tokens=0) as permit:
            sent.append(clock.now())
            await _sleep(clock, LATENCY_S)
            if STORM[0] <= clock.now() < STORM[1]:
                permit.rate_limited(retry_after_s=RETRY_AFTER_S)
            else:
                permit.settle(input_tokens=10, output_tokens=0)
                return True
        await _sleep(clock, RETRY_AFTER_S)
    return False


@pytest.mark.asyncio
async def test_in_a_429_storm_one_probe_goes_out_per_retry_after_and_no_call_fails() -> None:
    """40 calls in flight over four processes when the storm starts: the in-flight ones get
    their 429, then one probe per pause asks the server, and nobody spends attempts waiting.
    First come, first served sent every waiting call at the end of each pause instead."""
    limiter, clock = make(TierLimits(rpm=100_000, itpm=1_000_000, otpm=1_000_000,
                                     max_concurrency=40))
    leases = [LimiterLease(InProcessHandle(limiter), clock=clock) for _ in range(4)]
    sent: list[float] = []
    calls = [asyncio.ensure_future(_call(leases[i % 4], clock, sent)) for i in range(400)]
    for _ in range(1_000):  # 10 s in 10 ms steps: the storm and the recovery after it
        clock.advance(0.01)
        await spin()
        if all(c.done() for c in calls):
            break
    assert all(c.done() for c in calls)
    in_storm = [t for t in sent if STORM[0] <= t + LATENCY_S < STORM[1]]
    # The 40 in flight when it starts, then one probe per pause (4 at most, plus a spare).
    # The 40 in flight when it started, then one probe per pause: 4 at most in 2 s. (Before,
    # every waiting call went at the end of each pause: 120.)
    assert len(in_storm) <= 40 + (STORM[1] - STORM[0]) / RETRY_AFTER_S, sorted(in_storm)
    assert sum(c.result() for c in calls) == 400  # no call failed


@pytest.mark.asyncio
async def test_after_a_pause_one_probe_is_granted_and_an_old_calls_answer_does_not_end_it(
        ) -> None:
    limiter, clock = make()
    a = (await limiter.settle(SettleBatch(lease_id="a", session=None, seq=1))).session
    b = (await limiter.settle(SettleBatch(lease_id="b", session=None, seq=1))).session
    await limiter.settle(SettleBatch(lease_id="a", session=a, seq=2, reports=[
        KeyReport(key=KEY, retry_after_s=2)]))
    # A call sent before the 429 is answered during the pause: it says nothing of the storm.
    await limiter.settle(SettleBatch(lease_id="b", session=b, seq=2, reports=[
        KeyReport(key=KEY, answered=1)]))
    asks = [asyncio.ensure_future(limiter.acquire(GrantRequest(
        lease_id=lease, session=session, seq=3, key=KEY, needs=[Need(input_tokens=10,
                                                                    output_tokens=0)])))
        for lease, session in (("a", a), ("b", b))]
    clock.advance(2)
    await spin()
    assert [t.done() for t in asks].count(True) == 1  # the probe
    clock.advance(1)
    await spin()
    assert [t.done() for t in asks].count(True) == 1  # the others wait for its answer
    prober = "a" if asks[0].done() else "b"
    await limiter.settle(SettleBatch(lease_id=prober, session=a if prober == "a" else b, seq=4,
                                     reports=[KeyReport(key=KEY, answered=1)]))
    await spin()
    assert all(t.done() for t in asks)
