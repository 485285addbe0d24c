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

from actors.limits import Amount, GrantRequest, KeyReport, Need, SettleBatch
from actors.ratelimiter import RateLimiter
from tests.actors.test_ratelimiter import KEY, LIMITS, make, spin

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
