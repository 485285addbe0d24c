"""The RateLimiter on real Ray: one per cluster, its limits held across processes and restarts.

Four caller actors stand in for agent hosts: each runs its share of 50 coroutines over one
``LimiterLease``. Inside each permit a coroutine tells a recorder actor it entered and left
(so the recorder's count of calls in flight can only undercount what the limiter allowed)
and when it was granted (to check the token limit over every window of the run).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors.limiter_lease import LimiterLease
from actors.limits import BucketKey, TierLimits
from actors.ratelimiter import get_rate_limiter

KEY = BucketKey(account="a1b2c3d4e5f6", tier="sonnet")
# 20,000 input tokens a second; a call takes 500, so 40 calls a second once the bucket is low.
LIMITS = TierLimits(rpm=100_000, itpm=1_200_000, otpm=10_000_000, max_concurrency=8)
TOKENS = 500
CALLERS, COROUTINES, CALLS = 4, (13, 13, 12, 12), 3  # 50 coroutines, 150 calls
LEFT_AFTER_DRAIN = 10_000  # the run needs 75,000 tokens: about 3 s of refill


@ray.remote(num_cpus=0)
class Recorder:
    """Counts calls in flight (keeping the peak) and keeps every grant's time and tokens."""

    def __init__(self) -> None:
        self.in_flight, self.peak = 0, 0
        self.grants: list[tuple[float, int]] = []
        self.counted = asyncio.Condition()

    async def enter(self, granted_at: float, tokens: int) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.grants.append((granted_at, tokens))
        async with self.counted:
            self.counted.notify_all()

    async def leave(self) -> None:
        self.in_flight -= 1

    async def reached(self, grants: int) -> None:
        """Return once ``grants`` grants have been recorded."""
        async with self.counted:
            await self.counted.wait_for(lambda: len(self.grants) >= grants)

    async def summary(self) -> tuple[int, list[tuple[float, int]]]:
        return self.peak, sorted(self.grants)


@ray.remote(num_cpus=0)
class Caller:
    """An agent host: many coroutines sharing one lease, as Agent actors do."""

    async def get_limiter_incarnation(self, namespace: str) -> str:
        limiter = get_rate_limiter(LIMITS, namespace=namespace)
        return (await limiter.status.remote()).incarnation

    async def run(self, limiter: Any, coroutines: int, recorder: Any) -> int:
        lease = LimiterLease(limiter)

        async def one() -> None:
            for _ in range(CALLS):
                async with lease.reserve(KEY, input_tokens=TOKENS, output_tokens=0) as permit:
                    await recorder.enter.remote(time.monotonic(), TOKENS)
                    await recorder.leave.remote()
                    permit.settle(input_tokens=TOKENS, output_tokens=0)

        await asyncio.gather(*(one() for _ in range(coroutines)))
        await lease.close()
        return coroutines * CALLS


@pytest.fixture(scope="module")
def callers(ray_session: None) -> Iterator[list[Any]]:
    actors = [Caller.remote() for _ in range(CALLERS)]
    yield actors
    for actor in actors:
        ray.kill(actor)


@pytest.fixture
def limiter(ray_session: None) -> Iterator[Any]:
    """A fresh limiter in a namespace of its own, killed for good afterwards."""
    handle = get_rate_limiter(LIMITS, namespace=f"rl-{uuid.uuid4().hex[:8]}", lease_ttl_s=3)
    yield handle
    ray.kill(handle, no_restart=True)


def test_get_rate_limiter_from_many_processes_at_once_yields_one_limiter(
        callers: list[Any]) -> None:
    namespace = f"rl-{uuid.uuid4().hex[:8]}"
    refs = [c.get_limiter_incarnation.remote(namespace) for c in callers]
    mine = get_rate_limiter(LIMITS, namespace=namespace)
    incarnations = set(ray.get(refs)) | {ray.get(mine.status.remote()).incarnation}
    named = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == namespace]
    ray.kill(mine, no_restart=True)
    assert len(incarnations) == 1
    assert named == [{"name": "rate_limiter", "namespace": namespace}]


def test_fifty_callers_in_four_processes_stay_under_concurrency_and_token_limits(
        callers: list[Any], limiter: Any) -> None:
    recorder = Recorder.remote()
    drained_at = _drain(limiter)
    done = ray.get([c.run.remote(limiter, n, recorder) for c, n in zip(callers, COROUTINES,
                                                                       strict=True)])
    peak, grants = ray.get(recorder.summary.remote())

    assert sum(done) == len(grants) == sum(COROUTINES) * CALLS
    assert peak <= LIMITS.max_concurrency
    _assert_token_limit_held([(drained_at, LIMITS.itpm - LEFT_AFTER_DRAIN), *grants])
    # Once the lease is closed nothing stays held.
    bucket = ray.get(limiter.status.remote()).buckets[0]
    assert (bucket.in_use, bucket.held.input_tokens) == (0, 0)


@pytest.mark.parametrize("kill", ["ray.kill", "SIGKILL"])
def test_the_limiter_killed_mid_run_restarts_empty_and_every_caller_finishes(
        callers: list[Any], limiter: Any, kill: str) -> None:
    recorder = Recorder.remote()
    before = ray.get(limiter.status.remote())
    drained_at = _drain(limiter)
    runs = [c.run.remote(limiter, n, recorder) for c, n in zip(callers, COROUTINES, strict=True)]
    ray.get(recorder.reached.remote(30), timeout=60)
    if kill == "SIGKILL":
        os.kill(before.pid, signal.SIGKILL)
    else:
        ray.kill(limiter, no_restart=False)

    done = ray.get(runs, timeout=120)
    peak, grants = ray.get(recorder.summary.remote())
    after = ray.get(limiter.status.remote())

    assert sum(done) == len(grants) == sum(COROUTINES) * CALLS
    assert (after.restarted, after.incarnation != before.incarnation) == (True, True)
    assert peak <= LIMITS.max_concurrency
    _assert_token_limit_held([(drained_at, LIMITS.itpm - LEFT_AFTER_DRAIN), *grants])


def _drain(limiter: Any) -> float:
    """Spend all but ``LEFT_AFTER_DRAIN`` of the input bucket, so the run hits the refill."""

    async def spend() -> float:
        lease = LimiterLease(limiter)
        tokens = LIMITS.itpm - LEFT_AFTER_DRAIN
        async with lease.reserve(KEY, input_tokens=tokens, output_tokens=0) as permit:
            at = time.monotonic()
            permit.settle(input_tokens=tokens, output_tokens=0)
        await lease.close()
        return at

    return asyncio.run(spend())


def _assert_token_limit_held(grants: list[tuple[float, int]]) -> None:
    """In every window [t_i, t_j], grants total at most capacity + refill over the window.

    Grant times are taken by the callers just after entering, a little after the lease
    served them, so each window gets 100 ms of refill as slack for that lag.
    """
    grants = sorted(grants)
    rate = LIMITS.itpm / 60
    for i, (start, _) in enumerate(grants):
        total = 0
        for end, tokens in grants[i:]:
            total += tokens
            allowed = LIMITS.itpm + rate * (end - start + 0.1)
            assert total <= allowed, f"{total} tokens in {end - start:.3f}s > {allowed:.0f}"


@pytest.mark.slow  # Ray reports custom metrics every 10 s by default
def test_grants_and_429_pauses_show_in_prometheus_metrics_by_tier(limiter: Any) -> None:
    key = KEY.model_copy(update={"tier": "opus"})

    async def call_then_429() -> None:
        lease = LimiterLease(limiter)
        async with lease.reserve(key, input_tokens=10, output_tokens=10) as permit:
            permit.settle(input_tokens=10, output_tokens=10)
        async with lease.reserve(key, input_tokens=10, output_tokens=10) as permit:
            permit.rate_limited(retry_after_s=0.01)
        await lease.close()

    asyncio.run(call_then_429())
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = ("ray_raytroupe_limiter_grants_total{", "ray_raytroupe_limiter_429_pauses_total{",
              "ray_raytroupe_limiter_wait_s_count{", "ray_raytroupe_limiter_queue_depth{")
    deadline, found = time.monotonic() + 30, set()
    while time.monotonic() < deadline and len(found) < len(wanted):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            body = response.read().decode()
        found = {w for w in wanted for line in body.splitlines()
                 if line.startswith(w) and 'tier="opus"' in line}
        time.sleep(0.5)  # poll interval of a bounded poll
    assert found == set(wanted)
    assert "a1b2c3d4e5f6" not in body  # tags are tiers, never accounts
