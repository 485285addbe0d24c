"""Acquire+settle pairs per second through the cluster's RateLimiter, with and without leases.

50 caller coroutines spread over 4 actor processes (13, 13, 12, 12) loop: reserve a permit,
yield once to the loop (where the HTTP call would be), settle, leave. In the first two cases
the limits are far above what the run can use, so every microsecond of waiting is the
limiter's own overhead: a best case by construction. The third case makes a limit bind.

Three cases run against the same limiter in the same run:

* ``lease``: each process holds one ``LimiterLease`` (batched grants, local stock, batched
  settles): the product's hot path. Reports pairs/s and the p99 of the time from asking for a
  permit to holding it (``added_wait_p99_ms``).
* ``rpc``: the baseline, one ``acquire`` RPC and one ``settle`` RPC per call (each coroutine a
  lease of its own, so nothing is batched).
* ``binding``: through the leases again, on a tier capped at ``BOUND_CONCURRENCY`` calls in
  flight cluster-wide, each call lasting ``BOUND_CALL_S``: the 50 callers want more than the
  cap, so the limit binds. The most the cap allows is ``BOUND_CONCURRENCY / BOUND_CALL_S``
  pairs/s (``binding_ideal_pairs_per_s``); ``binding_fraction_of_ideal`` says how much of it
  the limiter delivers while it refuses the rest (1.0: no slot ever idles).

Each case is warmed up, then measured over ``--rounds`` rounds of ``--seconds`` seconds.
Prints ONE JSON line:
``{"bench": "limiter", "pairs_per_s": ..., "added_wait_p99_ms": ...,
"baseline_rpc_pairs_per_s": ..., "binding_pairs_per_s": ..., "binding_fraction_of_ideal": ...,
...}``

Usage: ``python benchmarks/limiter.py [--seconds 3] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from typing import Any

import ray

from actors.limiter_lease import LimiterLease
from actors.limits import (
    Amount,
    BucketKey,
    GrantRequest,
    KeyReport,
    Need,
    SettleBatch,
    TierLimits,
)
from actors.ratelimiter import get_rate_limiter

KEY = BucketKey(account="be4c4a11", tier="haiku")
UNBOUND = TierLimits(rpm=10**9, itpm=10**12, otpm=10**12, max_concurrency=10**6)
BOUND_KEY = BucketKey(account="be4c4a11", tier="sonnet")
BOUND_CONCURRENCY, BOUND_CALL_S = 8, 0.02
BOUND = TierLimits(rpm=10**9, itpm=10**12, otpm=10**12, max_concurrency=BOUND_CONCURRENCY)
COROUTINES = (13, 13, 12, 12)
IN, OUT = 1_200, 300


@ray.remote(num_cpus=0)
class Caller:
    """One agent-host process: its coroutines share one lease (or none, for the baseline)."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter
        self.lease = LimiterLease(limiter)

    async def lease_round(self, coroutines: int, seconds: float, key: BucketKey = KEY,
                          call_s: float = 0.0) -> tuple[int, list[float]]:
        """Pairs done and each permit's wait (s), over ``seconds``; each call lasts ``call_s``."""
        stop_at, waits = time.perf_counter() + seconds, []

        async def one() -> None:
            while time.perf_counter() < stop_at:
                asked = time.perf_counter()
                async with self.lease.reserve(key, input_tokens=IN, output_tokens=OUT) as p:
                    waits.append(time.perf_counter() - asked)
                    await asyncio.sleep(call_s)  # the HTTP call
                    p.settle(input_tokens=IN, output_tokens=OUT // 2)

        await asyncio.gather(*(one() for _ in range(coroutines)))
        return len(waits), waits

    async def rpc_round(self, coroutines: int, seconds: float) -> int:
        """Pairs done with one acquire and one settle RPC each, over ``seconds``."""
        stop_at, done = time.perf_counter() + seconds, [0]

        async def one() -> None:
            lease_id, seq = uuid.uuid4().hex, 1
            reply = await self.limiter.settle.remote(
                SettleBatch(lease_id=lease_id, session=None, seq=seq))
            while time.perf_counter() < stop_at:
                seq += 1
                await self.limiter.acquire.remote(GrantRequest(
                    lease_id=lease_id, session=reply.session, seq=seq, key=KEY,
                    needs=[Need(input_tokens=IN, output_tokens=OUT)]))
                await asyncio.sleep(0)  # the HTTP call
                seq += 1
                await self.limiter.settle.remote(SettleBatch(
                    lease_id=lease_id, session=reply.session, seq=seq, reports=[KeyReport(
                        key=KEY, used=Amount(requests=1, input_tokens=IN, output_tokens=OUT),
                        released_slots=1)]))
                done[0] += 1
            await self.limiter.settle.remote(SettleBatch(
                lease_id=lease_id, session=reply.session, seq=seq + 1, closing=True))

        await asyncio.gather(*(one() for _ in range(coroutines)))
        return done[0]


def _lease_round(callers: list[Any], seconds: float, key: BucketKey = KEY,
                 call_s: float = 0.0) -> tuple[float, list[float]]:
    results = ray.get([c.lease_round.remote(n, seconds, key, call_s)
                       for c, n in zip(callers, COROUTINES, strict=True)])
    return sum(r[0] for r in results) / seconds, [w for r in results for w in r[1]]


def _rpc_round(callers: list[Any], seconds: float) -> float:
    done = ray.get([c.rpc_round.remote(n, seconds)
                    for c, n in zip(callers, COROUTINES, strict=True)])
    return sum(done) / seconds


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else 0.0


def main(seconds: float, rounds: int) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the Makefile and CI set it
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024,
             namespace=f"bench-limiter-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        limiter = get_rate_limiter(UNBOUND)
        callers = [Caller.remote(limiter) for _ in COROUTINES]
        _lease_round(callers, 1.0)  # warm up: processes, imports, connections
        lease = [_lease_round(callers, seconds) for _ in range(rounds)]
        _rpc_round(callers, 1.0)
        rpc = [_rpc_round(callers, seconds) for _ in range(rounds)]
        ray.get(limiter.set_limits.remote(BOUND_KEY.tier, BOUND))
        _lease_round(callers, 1.0, BOUND_KEY, BOUND_CALL_S)
        bound = [_lease_round(callers, seconds, BOUND_KEY, BOUND_CALL_S)[0]
                 for _ in range(rounds)]
        rates = [r[0] for r in lease]
        waits = [w for r in lease for w in r[1]]
        ideal = BOUND_CONCURRENCY / BOUND_CALL_S
        return {
            "bench": "limiter",
            "pairs_per_s": round(statistics.fmean(rates)),
            "added_wait_p99_ms": round(_p99(waits) * 1000, 3),
            "baseline_rpc_pairs_per_s": round(statistics.fmean(rpc)),
            "pairs_per_s_stdev": round(statistics.stdev(rates)) if rounds > 1 else 0,
            "baseline_rpc_pairs_per_s_stdev": round(statistics.stdev(rpc)) if rounds > 1 else 0,
            "added_wait_p50_ms": round(statistics.median(waits) * 1000, 3),
            "speedup": round(statistics.fmean(rates) / statistics.fmean(rpc), 1),
            "binding_pairs_per_s": round(statistics.fmean(bound)),
            "binding_ideal_pairs_per_s": round(ideal),
            "binding_fraction_of_ideal": round(statistics.fmean(bound) / ideal, 3),
            "binding_max_concurrency": BOUND_CONCURRENCY, "binding_call_s": BOUND_CALL_S,
            "callers": sum(COROUTINES), "processes": len(COROUTINES),
            "seconds": seconds, "rounds": rounds,
        }
    finally:
        ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(main(args.seconds, args.rounds)), flush=True)
